/*
 * cache.h - the metadata page cache (owner of struct page_cache).
 *
 * 4 KiB pages of metadata (BAT pages; sector-bitmap pages for differencing disks) are
 * read on demand into a cache of fixed size chosen at open, whatever the size of the
 * disk: a 64 TiB disk with a 512 MiB BAT opens in a few MiB.  Pages are found by file
 * offset (hashed), replaced least recently used first, and a modified page stays until
 * it is committed: cache_commit() hands every dirty page to the log writer, which writes
 * pages and knows nothing of what they hold.  When every page is dirty and another is
 * needed, the cache commits first.  A page pointer is valid until the next cache call.
 */
#ifndef VHDX_CACHE_H
#define VHDX_CACHE_H

#include "vhdx.h"

struct vhdx_disk;
struct log_page;

struct cache_slot {
    uint64_t offset;                /* file offset of the page held */
    int32_t hash_next;              /* next slot of its bucket, or -1 */
    int32_t older, newer;           /* least-recently-used list, or -1 */
    bool used;
    bool dirty;
};

struct page_cache {
    uint8_t *memory;                /* count pages */
    struct cache_slot *slots;
    int32_t *buckets;               /* first slot of each hash bucket, or -1 */
    struct log_page *commit;        /* room to hand every page to the log writer */
    uint32_t count, used, dirty;
    uint32_t bucket_mask;
    int32_t newest, oldest;
    int32_t last;                   /* the slot found last: sequential access hits it */
    uint64_t hits, misses;
};

int cache_init(struct vhdx_disk *disk, size_t bytes);
void cache_release(struct vhdx_disk *disk);
int cache_read(struct vhdx_disk *disk, uint64_t offset, const uint8_t **page);
/* The page, marked dirty: the caller changes it before the next cache call. */
int cache_modify(struct vhdx_disk *disk, uint64_t offset, uint8_t **page);
int cache_commit(struct vhdx_disk *disk);
/* A page read by someone else (validation streams the BAT): keep it if there is room. */
void cache_preload(struct vhdx_disk *disk, uint64_t offset, const uint8_t *data);
bool cache_is_dirty(const struct vhdx_disk *disk);

#endif

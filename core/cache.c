/*
 * cache.c - the metadata page cache (see cache.h).
 */
#include "cache.h"

#include "disk.h"

static uint32_t bucket_of(const struct page_cache *c, uint64_t offset)
{
    return (uint32_t)(((offset / PAGE_SIZE) * 0x9E3779B97F4A7C15ull) >> 32) & c->bucket_mask;
}

int cache_init(struct vhdx_disk *disk, size_t bytes)
{
    struct page_cache *c = &disk->cache;
    uint32_t buckets = 1;

    mem_zero(c, sizeof *c);
    c->count = (uint32_t)min_u64(bytes / PAGE_SIZE, UINT32_MAX / 4);
    if (c->count == 0)
        c->count = 1;
    while (buckets < 2 * c->count)
        buckets *= 2;
    c->bucket_mask = buckets - 1;
    c->memory = core_alloc(disk, (size_t)c->count * PAGE_SIZE);
    c->slots = c->memory ? core_alloc(disk, c->count * sizeof *c->slots) : NULL;
    c->buckets = c->slots ? core_alloc(disk, buckets * sizeof *c->buckets) : NULL;
    c->commit = c->buckets ? core_alloc(disk, c->count * sizeof *c->commit) : NULL;
    if (!c->commit)
        return disk->report.diag.code;
    for (uint32_t b = 0; b < buckets; b++)
        c->buckets[b] = -1;
    c->newest = c->oldest = c->last = -1;
    return VHDX_OK;
}

void cache_release(struct vhdx_disk *disk)
{
    struct page_cache *c = &disk->cache;

    core_free(disk, c->commit);
    core_free(disk, c->buckets);
    core_free(disk, c->slots);
    core_free(disk, c->memory);
    mem_zero(c, sizeof *c);
}

static uint8_t *page_of(const struct page_cache *c, int32_t slot)
{
    return c->memory + (size_t)slot * PAGE_SIZE;
}

static void lru_unlink(struct page_cache *c, int32_t s)
{
    struct cache_slot *slot = &c->slots[s];

    if (slot->older >= 0)
        c->slots[slot->older].newer = slot->newer;
    else
        c->oldest = slot->newer;
    if (slot->newer >= 0)
        c->slots[slot->newer].older = slot->older;
    else
        c->newest = slot->older;
    slot->older = slot->newer = -1;
}

static void lru_make_newest(struct page_cache *c, int32_t s)
{
    struct cache_slot *slot = &c->slots[s];

    if (c->newest == s)
        return;
    if (slot->used)
        lru_unlink(c, s);
    slot->older = c->newest;
    slot->newer = -1;
    if (c->newest >= 0)
        c->slots[c->newest].newer = s;
    c->newest = s;
    if (c->oldest < 0)
        c->oldest = s;
}

static int32_t lookup(const struct page_cache *c, uint64_t offset)
{
    int32_t s = c->buckets[bucket_of(c, offset)];

    while (s >= 0 && c->slots[s].offset != offset)
        s = c->slots[s].hash_next;
    return s;
}

static void hash_remove(struct page_cache *c, int32_t s)
{
    int32_t *link = &c->buckets[bucket_of(c, c->slots[s].offset)];

    while (*link != s)
        link = &c->slots[*link].hash_next;
    *link = c->slots[s].hash_next;
}

/* Slot `s` holds the clean page at `offset` now. */
static void hold(struct page_cache *c, int32_t s, uint64_t offset)
{
    uint32_t bucket = bucket_of(c, offset);

    c->slots[s].offset = offset;
    c->slots[s].dirty = false;
    c->slots[s].hash_next = c->buckets[bucket];
    c->buckets[bucket] = s;
    lru_make_newest(c, s);
    c->slots[s].used = true;
}

/* A slot for a new page: an unused one, else the least recently used clean one. */
static int take_slot(struct vhdx_disk *disk, int32_t *out)
{
    struct page_cache *c = &disk->cache;
    int32_t s;
    int rc;

    if (c->used < c->count) {
        *out = (int32_t)c->used++;
        return VHDX_OK;
    }
    if (c->dirty == c->count) {
        /* Every page waits for the log: commit them (an early flush). */
        rc = cache_commit(disk);
        if (rc)
            return rc;
    }
    for (s = c->oldest; s >= 0 && c->slots[s].dirty; s = c->slots[s].newer)
        ;
    hash_remove(c, s);
    lru_unlink(c, s);
    c->slots[s].used = false;
    if (c->last == s)
        c->last = -1;
    *out = s;
    return VHDX_OK;
}

static int find_page(struct vhdx_disk *disk, uint64_t offset, int32_t *out)
{
    struct page_cache *c = &disk->cache;
    int32_t s;
    int rc;

    if (c->last >= 0 && c->slots[c->last].offset == offset) {
        c->hits++;
        *out = c->last;
        return VHDX_OK;
    }
    s = lookup(c, offset);
    if (s >= 0) {
        c->hits++;
        lru_make_newest(c, s);
        c->last = *out = s;
        return VHDX_OK;
    }
    c->misses++;
    rc = take_slot(disk, &s);
    if (rc)
        return rc;
    rc = file_read(disk, offset, page_of(c, s), PAGE_SIZE);
    if (rc) {
        /* The slot holds nothing: an offset no page has, reused like any clean slot. */
        hold(c, s, UINT64_MAX);
        return rc;
    }
    hold(c, s, offset);
    c->last = *out = s;
    return VHDX_OK;
}

void cache_preload(struct vhdx_disk *disk, uint64_t offset, const uint8_t *data)
{
    struct page_cache *c = &disk->cache;
    int32_t s;

    if (c->used == c->count || lookup(c, offset) >= 0)
        return;
    s = (int32_t)c->used++;
    mem_copy(page_of(c, s), data, PAGE_SIZE);
    hold(c, s, offset);
}

int cache_read(struct vhdx_disk *disk, uint64_t offset, const uint8_t **page)
{
    int32_t s;
    int rc = find_page(disk, offset, &s);

    if (!rc)
        *page = page_of(&disk->cache, s);
    return rc;
}

int cache_modify(struct vhdx_disk *disk, uint64_t offset, uint8_t **page)
{
    struct page_cache *c = &disk->cache;
    int32_t s;
    int rc = find_page(disk, offset, &s);

    if (rc)
        return rc;
    if (!c->slots[s].dirty) {
        c->slots[s].dirty = true;
        c->dirty++;
    }
    *page = page_of(c, s);
    return VHDX_OK;
}

bool cache_is_dirty(const struct vhdx_disk *disk)
{
    return disk->cache.dirty != 0;
}

int cache_commit(struct vhdx_disk *disk)
{
    struct page_cache *c = &disk->cache;
    uint32_t n = 0;
    int rc;

    if (!c->dirty)
        return VHDX_OK;
    for (uint32_t s = 0; s < c->used; s++) {
        if (c->slots[s].dirty) {
            c->commit[n].offset = c->slots[s].offset;
            c->commit[n].data = page_of(c, (int32_t)s);
            n++;
        }
    }
    rc = logw_commit(disk, c->commit, n);
    if (rc)
        return rc;
    for (uint32_t s = 0; s < c->used; s++)
        c->slots[s].dirty = false;
    c->dirty = 0;
    return VHDX_OK;
}

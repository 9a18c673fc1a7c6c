/*
 * Freestanding read-only FAT12/16/32 reader and file mapper.  See fat.h for the API.
 *
 * Layout of a FAT volume (all offsets from the boot sector, in sectors):
 *
 *   [reserved: boot sector, FSInfo, ...][FAT #0][FAT #1]...[FAT12/16 root dir][data: cluster 2, 3, ...]
 *
 * The references are the Microsoft "FAT: General Overview of On-Disk Format" (1.03) for
 * the layout and type rules, and the EDK2 FAT driver for what firmware accepts: this
 * code should accept every volume the firmware itself mounted as the ESP.
 *
 * Only <stdint.h>, <stddef.h> and <stdbool.h>: this file is built into the UEFI driver.
 */
#include "fat.h"

/* Offsets in the boot sector (BPB). */
#define BPB_BYTES_PER_SECTOR    11
#define BPB_SECTORS_PER_CLUSTER 13
#define BPB_RESERVED_SECTORS    14
#define BPB_FAT_COUNT           16
#define BPB_ROOT_ENTRY_COUNT    17
#define BPB_TOTAL_SECTORS_16    19
#define BPB_MEDIA               21
#define BPB_FAT_SIZE_16         22
#define BPB_TOTAL_SECTORS_32    32
#define BPB32_FAT_SIZE_32       36
#define BPB32_EXT_FLAGS         40
#define BPB32_ROOT_CLUSTER      44

/* Offsets in a 32-byte directory entry. */
#define DIR_ENTRY_BYTES      32u
#define DIR_ATTR             11
#define DIR_FIRST_CLUSTER_HI 20
#define DIR_FIRST_CLUSTER_LO 26
#define DIR_FILE_SIZE        28
#define DIR_FREE_MARK        0xE5 /* first name byte of a deleted entry */
#define DIR_END_MARK         0x00 /* first name byte of the first never-used entry */

/* Long-name (VFAT) entries: attributes 0x0F, 13 UTF-16 units each, up to 20 per name. */
#define ATTR_LONG_NAME        0x0Fu
#define ATTR_LONG_NAME_MASK   0x3Fu
#define LFN_ORDER             0
#define LFN_LAST_FLAG         0x40u
#define LFN_TYPE              12
#define LFN_CHECKSUM          13
#define LFN_UNITS_PER_ENTRY   13u
#define LFN_MAX_ENTRIES       20u
#define LFN_MAX_UNITS         (LFN_UNITS_PER_ENTRY * LFN_MAX_ENTRIES)
#define NAME_MAX_UNITS        255u

/* Cluster counts that decide the FAT type (Microsoft spec, section 3.5). */
#define FAT12_MAX_CLUSTERS 4084u
#define FAT16_MAX_CLUSTERS 65524u
/* FAT32 entries are 28 bits; 0x0FFFFFF7 is "bad", so the highest usable cluster is 0x0FFFFFF6. */
#define FAT32_MAX_CLUSTERS 0x0FFFFFF5u

/* ------------------------------------------------------------------------------------ */
/* Small helpers (no libc here).                                                         */

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Byte copy.  The volatile keeps GCC from turning the loop into a call to memcpy, which a
   freestanding firmware image may not have; it only ever copies less than a sector. */
static void copy_bytes(void *dst, const void *src, size_t n)
{
    volatile uint8_t *d = dst;
    const uint8_t *s = src;
    while (n-- > 0)
        *d++ = *s++;
}

static bool is_power_of_two(uint32_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

/* ------------------------------------------------------------------------------------ */
/* Errors.                                                                               */

const char *fat_strerror(enum fat_error err)
{
    switch (err) {
    case FAT_OK:                 return "success";
    case FAT_E_IO:               return "read error";
    case FAT_E_INVALID_ARG:      return "invalid argument";
    case FAT_E_NOT_FAT:          return "not a FAT file system";
    case FAT_E_VOLUME_TOO_BIG:   return "file system larger than its partition";
    case FAT_E_BAD_PATH:         return "path is not valid UTF-8 or a name is too long";
    case FAT_E_NOT_FOUND:        return "file not found";
    case FAT_E_NOT_A_DIR:        return "path component is not a directory";
    case FAT_E_NOT_A_FILE:       return "is a directory, not a file";
    case FAT_E_CORRUPT_CHAIN:    return "cluster chain points to a free, bad or out-of-range cluster";
    case FAT_E_CHAIN_LOOP:       return "cluster chain loops";
    case FAT_E_CHAIN_SHORT:      return "file size larger than its cluster chain";
    case FAT_E_DIR_TOO_LARGE:    return "directory has too many entries";
    case FAT_E_BUFFER_TOO_SMALL: return "extent array too small";
    case FAT_E_FILE_TOO_LARGE:   return "file larger than the buffer";
    }
    return "unknown FAT error";
}

/* ------------------------------------------------------------------------------------ */
/* Cached reads.                                                                         */

/*
 * Returns a pointer to volume bytes [offset, offset + len) through a cache window.
 * Windows are FAT_CACHE_BYTES-aligned, so any sector-aligned range no larger than a
 * sector, and any naturally aligned FAT16/FAT32 entry or directory entry, falls inside a
 * single window (a FAT12 entry may not: see fat_entry).  The pointer is valid until the
 * next use of the same cache.
 */
static enum fat_error cache_get(struct fat_volume *vol, struct fat_cache *cache, uint64_t offset,
                                uint32_t len, const uint8_t **out)
{
    uint64_t base = offset & ~(uint64_t)(FAT_CACHE_BYTES - 1);

    if (offset > vol->volume_bytes || len > vol->volume_bytes - offset ||
        offset - base + len > FAT_CACHE_BYTES)
        return FAT_E_IO; /* cannot happen with a validated BPB; refuse rather than overrun */
    if (cache->length == 0 || cache->base != base) {
        uint64_t left = vol->volume_bytes - base;
        uint32_t n = left < FAT_CACHE_BYTES ? (uint32_t)left : FAT_CACHE_BYTES;
        cache->length = 0;
        if (vol->read(vol->read_ctx, base, cache->data, n) != 0)
            return FAT_E_IO;
        cache->base = base;
        cache->length = n;
    }
    *out = cache->data + (offset - base);
    return FAT_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Mounting.                                                                             */

static enum fat_error not_fat(struct fat_volume *vol, const char *why)
{
    vol->detail = why;
    return FAT_E_NOT_FAT;
}

enum fat_error fat_mount(struct fat_volume *vol, fat_read_fn read, void *read_ctx,
                         uint64_t partition_bytes)
{
    if (vol == NULL || read == NULL)
        return FAT_E_INVALID_ARG;

    vol->read = read;
    vol->read_ctx = read_ctx;
    vol->type = FAT_TYPE_12;
    vol->bytes_per_sector = vol->bytes_per_cluster = vol->cluster_count = 0;
    vol->root_cluster = vol->root_entry_count = 0;
    vol->fat_offset = vol->fat_bytes = vol->root_dir_offset = vol->data_offset = 0;
    vol->volume_bytes = 0;
    vol->detail = NULL;
    vol->fat_cache.length = 0;
    vol->dir_cache.length = 0;

    if (partition_bytes != 0 && partition_bytes < 512)
        return not_fat(vol, "partition smaller than a boot sector");

    /* The BPB is within the first 512 bytes whatever the sector size. */
    uint8_t *bs = vol->dir_cache.data;
    if (read(read_ctx, 0, bs, 512) != 0)
        return FAT_E_IO;

    uint32_t bytes_per_sector = get16(bs + BPB_BYTES_PER_SECTOR);
    uint32_t sectors_per_cluster = bs[BPB_SECTORS_PER_CLUSTER];
    uint32_t reserved_sectors = get16(bs + BPB_RESERVED_SECTORS);
    uint32_t fat_count = bs[BPB_FAT_COUNT];
    uint32_t root_entry_count = get16(bs + BPB_ROOT_ENTRY_COUNT);
    uint32_t media = bs[BPB_MEDIA];
    uint32_t fat_size_16 = get16(bs + BPB_FAT_SIZE_16);
    uint32_t total_sectors = get16(bs + BPB_TOTAL_SECTORS_16);
    if (total_sectors == 0)
        total_sectors = get32(bs + BPB_TOTAL_SECTORS_32);
    /* FAT32 fields overlap the FAT12/16 boot code area; only meaningful when FATSz16 == 0. */
    uint32_t fat_size = fat_size_16 != 0 ? fat_size_16 : get32(bs + BPB32_FAT_SIZE_32);

    if (bytes_per_sector != 512 && bytes_per_sector != 1024 && bytes_per_sector != 2048 &&
        bytes_per_sector != 4096)
        return not_fat(vol, "bytes per sector is not 512, 1024, 2048 or 4096");
    if (!is_power_of_two(sectors_per_cluster))
        return not_fat(vol, "sectors per cluster is not a power of two");
    if (reserved_sectors == 0)
        return not_fat(vol, "no reserved sectors");
    if (fat_count == 0)
        return not_fat(vol, "FAT count is zero");
    /* Same media byte rule as EDK2: 0xF0, 0xF8-0xFF, and the 0x00/0x01 some tools write. */
    if (media <= 0xF7 && media != 0xF0 && media != 0x00 && media != 0x01)
        return not_fat(vol, "invalid media descriptor");
    if (total_sectors == 0)
        return not_fat(vol, "total sector count is zero");
    if (fat_size == 0)
        return not_fat(vol, "FAT size is zero");

    /* All sector counts fit in 64 bits with room to spare (< 2^16 + 2^8 * 2^32 + 2^12). */
    uint64_t root_dir_sectors =
        ((uint64_t)root_entry_count * DIR_ENTRY_BYTES + bytes_per_sector - 1) / bytes_per_sector;
    uint64_t metadata_sectors =
        (uint64_t)reserved_sectors + (uint64_t)fat_count * fat_size + root_dir_sectors;
    if (metadata_sectors >= total_sectors)
        return not_fat(vol, "reserved sectors, FATs and root directory exceed the volume");
    uint64_t cluster_count = (total_sectors - metadata_sectors) / sectors_per_cluster;
    if (cluster_count == 0)
        return not_fat(vol, "no data clusters");

    enum fat_type type;
    uint64_t fat_bytes_needed; /* FAT entries 0 and 1 are reserved, then one per cluster */
    if (cluster_count <= FAT12_MAX_CLUSTERS) {
        type = FAT_TYPE_12;
        fat_bytes_needed = ((cluster_count + 2) * 3 + 1) / 2;
    } else if (cluster_count <= FAT16_MAX_CLUSTERS) {
        type = FAT_TYPE_16;
        fat_bytes_needed = (cluster_count + 2) * 2;
    } else if (cluster_count <= FAT32_MAX_CLUSTERS) {
        type = FAT_TYPE_32;
        fat_bytes_needed = (cluster_count + 2) * 4;
    } else {
        return not_fat(vol, "too many clusters for FAT32");
    }
    if ((uint64_t)fat_size * bytes_per_sector < fat_bytes_needed)
        return not_fat(vol, "FAT too small for the cluster count");

    uint32_t active_fat = 0;
    if (type == FAT_TYPE_32) {
        /* A BPB laid out for FAT12/16 on a volume whose size says FAT32 is inconsistent. */
        if (fat_size_16 != 0 || root_entry_count != 0)
            return not_fat(vol, "cluster count says FAT32 but the BPB is FAT12/16 style");
        uint32_t ext_flags = get16(bs + BPB32_EXT_FLAGS);
        /* Bit 7: FATs not mirrored, bits 0-3 name the one that is up to date. */
        if (ext_flags & 0x80u) {
            active_fat = ext_flags & 0x0Fu;
            if (active_fat >= fat_count)
                return not_fat(vol, "active FAT number out of range");
        }
        uint32_t root_cluster = get32(bs + BPB32_ROOT_CLUSTER);
        if (root_cluster < 2 || root_cluster > cluster_count + 1)
            return not_fat(vol, "FAT32 root directory cluster out of range");
        vol->root_cluster = root_cluster;
    } else {
        if (fat_size_16 == 0 || root_entry_count == 0)
            return not_fat(vol, "cluster count says FAT12/16 but the BPB is FAT32 style");
        vol->root_entry_count = root_entry_count;
    }

    uint64_t volume_bytes = (uint64_t)total_sectors * bytes_per_sector;
    if (partition_bytes != 0 && volume_bytes > partition_bytes)
        return FAT_E_VOLUME_TOO_BIG;

    vol->type = type;
    vol->bytes_per_sector = bytes_per_sector;
    vol->bytes_per_cluster = bytes_per_sector * sectors_per_cluster; /* <= 4096 * 128 */
    vol->cluster_count = (uint32_t)cluster_count;
    vol->fat_offset = ((uint64_t)reserved_sectors + (uint64_t)active_fat * fat_size) * bytes_per_sector;
    vol->fat_bytes = (uint64_t)fat_size * bytes_per_sector;
    if (type != FAT_TYPE_32)
        vol->root_dir_offset = ((uint64_t)reserved_sectors + (uint64_t)fat_count * fat_size) * bytes_per_sector;
    vol->data_offset = metadata_sectors * bytes_per_sector;
    vol->volume_bytes = volume_bytes;
    /* The boot sector went into dir_cache.data without making it a valid window. */
    return FAT_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Cluster chains.                                                                       */

static bool cluster_in_range(const struct fat_volume *vol, uint32_t cluster)
{
    return cluster >= 2 && cluster - 2 < vol->cluster_count;
}

static uint64_t cluster_offset(const struct fat_volume *vol, uint32_t cluster)
{
    return vol->data_offset + (uint64_t)(cluster - 2) * vol->bytes_per_cluster;
}

/* Reads the FAT entry of an in-range cluster (mount checked the FAT is big enough). */
static enum fat_error fat_entry(struct fat_volume *vol, uint32_t cluster, uint32_t *value)
{
    const uint8_t *p;
    enum fat_error err;

    switch (vol->type) {
    case FAT_TYPE_12: {
        /* 12-bit entries are packed in pairs into 3 bytes and can straddle a cache window,
           so fetch the two bytes separately. */
        uint64_t offset = vol->fat_offset + cluster + cluster / 2;
        err = cache_get(vol, &vol->fat_cache, offset, 1, &p);
        if (err != FAT_OK)
            return err;
        uint32_t low = p[0];
        err = cache_get(vol, &vol->fat_cache, offset + 1, 1, &p);
        if (err != FAT_OK)
            return err;
        uint32_t pair = low | ((uint32_t)p[0] << 8);
        *value = (cluster & 1) ? pair >> 4 : pair & 0x0FFFu;
        return FAT_OK;
    }
    case FAT_TYPE_16:
        err = cache_get(vol, &vol->fat_cache, vol->fat_offset + (uint64_t)cluster * 2, 2, &p);
        if (err == FAT_OK)
            *value = get16(p);
        return err;
    case FAT_TYPE_32:
        err = cache_get(vol, &vol->fat_cache, vol->fat_offset + (uint64_t)cluster * 4, 4, &p);
        if (err == FAT_OK)
            *value = get32(p) & 0x0FFFFFFFu; /* the top 4 bits are reserved */
        return err;
    }
    return FAT_E_INVALID_ARG;
}

static bool is_end_of_chain(const struct fat_volume *vol, uint32_t value)
{
    switch (vol->type) {
    case FAT_TYPE_12: return value >= 0x0FF8u;
    case FAT_TYPE_16: return value >= 0xFFF8u;
    case FAT_TYPE_32: return value >= 0x0FFFFFF8u;
    }
    return true;
}

/*
 * Follows a cluster chain.  Loops are caught two ways: Brent's cycle detection (remember
 * the cluster seen after 1, 2, 4, 8... steps; meeting it again means a cycle), which
 * finds a loop within a few times its length at no extra I/O, and a hard cap of
 * cluster_count steps, since a chain that visits more clusters than exist must repeat.
 */
struct chain {
    uint32_t cluster;      /* current cluster */
    uint32_t steps;        /* links followed so far */
    uint32_t loop_mark;    /* Brent's saved cluster */
    uint32_t since_mark;
    uint32_t mark_interval;
};

static void chain_start(struct chain *chain, uint32_t first_cluster)
{
    chain->cluster = first_cluster;
    chain->steps = 0;
    chain->loop_mark = first_cluster;
    chain->since_mark = 0;
    chain->mark_interval = 1;
}

/* Moves to the next cluster, or sets *at_end when the current one is the last. */
static enum fat_error chain_next(struct fat_volume *vol, struct chain *chain, bool *at_end)
{
    uint32_t next;
    enum fat_error err = fat_entry(vol, chain->cluster, &next);
    if (err != FAT_OK)
        return err;
    if (is_end_of_chain(vol, next)) {
        *at_end = true;
        return FAT_OK;
    }
    /* Free (0), reserved (1), bad (0x..FF7) and anything past the last cluster. */
    if (!cluster_in_range(vol, next))
        return FAT_E_CORRUPT_CHAIN;
    /* A chain of n clusters has n - 1 links, and there are only cluster_count clusters. */
    if (next == chain->loop_mark || ++chain->steps >= vol->cluster_count)
        return FAT_E_CHAIN_LOOP;
    if (++chain->since_mark == chain->mark_interval) {
        chain->loop_mark = next;
        chain->since_mark = 0;
        chain->mark_interval *= 2; /* stays < 2^29: steps < cluster_count < 2^28 */
    }
    chain->cluster = next;
    *at_end = false;
    return FAT_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Directories.                                                                          */

struct dir_cursor {
    bool fixed_root;      /* FAT12/16 root: a fixed area, not a cluster chain */
    uint64_t next;        /* volume offset of the next entry */
    uint64_t end;         /* end of the current cluster (or of the fixed root) */
    uint32_t entries;     /* entries returned so far */
    struct chain chain;
};

/* Cluster 0 means the root directory (it is also what ".." holds when its parent is root). */
static enum fat_error dir_open(struct fat_volume *vol, uint32_t cluster, struct dir_cursor *cursor)
{
    cursor->entries = 0;
    if (cluster == 0 && vol->type == FAT_TYPE_32)
        cluster = vol->root_cluster;
    chain_start(&cursor->chain, cluster); /* unused for the fixed root, but defined */
    if (cluster == 0) {
        cursor->fixed_root = true;
        cursor->next = vol->root_dir_offset;
        cursor->end = vol->root_dir_offset + (uint64_t)vol->root_entry_count * DIR_ENTRY_BYTES;
        return FAT_OK;
    }
    if (!cluster_in_range(vol, cluster))
        return FAT_E_CORRUPT_CHAIN;
    cursor->fixed_root = false;
    cursor->next = cluster_offset(vol, cluster);
    cursor->end = cursor->next + vol->bytes_per_cluster;
    return FAT_OK;
}

/* Gives the next 32-byte entry (valid until the next cache use), or sets *end. */
static enum fat_error dir_next(struct fat_volume *vol, struct dir_cursor *cursor,
                               const uint8_t **entry, uint64_t *entry_offset, bool *end)
{
    enum fat_error err;

    *end = false;
    if (cursor->next >= cursor->end) {
        if (cursor->fixed_root) {
            *end = true;
            return FAT_OK;
        }
        bool at_end;
        err = chain_next(vol, &cursor->chain, &at_end);
        if (err != FAT_OK)
            return err;
        if (at_end) {
            *end = true;
            return FAT_OK;
        }
        cursor->next = cluster_offset(vol, cursor->chain.cluster);
        cursor->end = cursor->next + vol->bytes_per_cluster;
    }
    if (cursor->entries >= FAT_MAX_DIR_ENTRIES)
        return FAT_E_DIR_TOO_LARGE;
    cursor->entries++;
    err = cache_get(vol, &vol->dir_cache, cursor->next, DIR_ENTRY_BYTES, entry);
    if (err != FAT_OK)
        return err;
    *entry_offset = cursor->next;
    cursor->next += DIR_ENTRY_BYTES;
    return FAT_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Names.                                                                                */

/*
 * Upper-cases the letters file names commonly use, for case-insensitive matching:
 * ASCII, Latin-1, Latin Extended-A, basic Greek and Cyrillic.  (Windows uses a full
 * Unicode upcase table; names on an ESP are in practice ASCII.)
 */
static uint16_t fold_case(uint16_t c)
{
    if (c < 0x80)
        return (c >= 'a' && c <= 'z') ? (uint16_t)(c - 0x20) : c;
    if (c >= 0xE0 && c <= 0xFE && c != 0xF7)
        return (uint16_t)(c - 0x20);
    if (c == 0xFF)
        return 0x178;
    if (c >= 0x100 && c <= 0x17F) {
        /* Upper/lower pairs: even/odd in 0100-012F, 0132-0137, 014A-0177; odd/even in
           0139-0148, 0179-017E.  0130/0131 (Turkish I) and the rest are left alone. */
        if ((c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
            return (uint16_t)(c & ~1u);
        if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
            return (c & 1) ? c : (uint16_t)(c - 1);
        return c;
    }
    if (c >= 0x3B1 && c <= 0x3C9)
        return c == 0x3C2 ? 0x3A3 : (uint16_t)(c - 0x20); /* final sigma -> SIGMA */
    if (c >= 0x430 && c <= 0x44F)
        return (uint16_t)(c - 0x20);
    if (c >= 0x450 && c <= 0x45F)
        return (uint16_t)(c - 0x50);
    return c;
}

static bool names_equal(const uint16_t *a, uint32_t a_len, const uint16_t *b, uint32_t b_len)
{
    if (a_len != b_len)
        return false;
    for (uint32_t i = 0; i < a_len; i++)
        if (fold_case(a[i]) != fold_case(b[i]))
            return false;
    return true;
}

/*
 * Decodes one path component of UTF-8 into UTF-16.  Strict: overlong forms, surrogates
 * and code points past U+10FFFF are refused, as are names over 255 UTF-16 units (the
 * longest a long file name can be).
 */
static bool utf8_to_utf16(const uint8_t *s, size_t len, uint16_t *out, uint32_t *out_len)
{
    size_t i = 0;
    uint32_t n = 0;

    while (i < len) {
        uint32_t c = s[i];
        size_t extra;
        uint32_t min;
        if (c < 0x80) {
            extra = 0;
            min = 0;
        } else if ((c & 0xE0) == 0xC0) {
            c &= 0x1F;
            extra = 1;
            min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            c &= 0x0F;
            extra = 2;
            min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            c &= 0x07;
            extra = 3;
            min = 0x10000;
        } else {
            return false;
        }
        if (len - i - 1 < extra)
            return false;
        for (size_t k = 1; k <= extra; k++) {
            uint32_t byte = s[i + k];
            if ((byte & 0xC0) != 0x80)
                return false;
            c = (c << 6) | (byte & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return false;
        i += 1 + extra;
        if (c >= 0x10000) {
            if (n + 2 > NAME_MAX_UNITS)
                return false;
            c -= 0x10000;
            out[n++] = (uint16_t)(0xD800 | (c >> 10));
            out[n++] = (uint16_t)(0xDC00 | (c & 0x3FF));
        } else {
            if (n + 1 > NAME_MAX_UNITS)
                return false;
            out[n++] = (uint16_t)c;
        }
    }
    *out_len = n;
    return true;
}

/*
 * The 8.3 name of a short entry as UTF-16 ("NAME.EXT", or "NAME" when there is no
 * extension).  Bytes >= 0x80 are in the volume's OEM code page, which we cannot know, so
 * they become 0, which never matches (a UTF-8 path cannot contain U+0000); so does a
 * leading 0x05, which stands for an OEM 0xE5.  The NT lowercase flags (DIR_NTRes
 * 0x08/0x10) only change case, which matching ignores.
 */
static uint32_t short_name_utf16(const uint8_t *entry, uint16_t out[12])
{
    uint32_t base_len = 8, ext_len = 3, n = 0;

    while (base_len > 0 && entry[base_len - 1] == ' ')
        base_len--;
    while (ext_len > 0 && entry[8 + ext_len - 1] == ' ')
        ext_len--;
    for (uint32_t i = 0; i < base_len; i++)
        out[n++] = entry[i] < 0x80 && !(i == 0 && entry[i] == 0x05) ? entry[i] : 0;
    if (ext_len > 0) {
        out[n++] = '.';
        for (uint32_t i = 0; i < ext_len; i++)
            out[n++] = entry[8 + i] < 0x80 ? entry[8 + i] : 0;
    }
    return n;
}

/* The checksum of the 11-byte short name that every LFN entry of the file carries. */
static uint8_t short_name_checksum(const uint8_t *entry)
{
    uint8_t sum = 0;
    for (int i = 0; i < 11; i++)
        sum = (uint8_t)(((sum & 1) ? 0x80 : 0) + (sum >> 1) + entry[i]);
    return sum;
}

/*
 * A long name being assembled.  On disk its entries come in reverse order (highest
 * sequence number first, flagged with 0x40) right before the short entry they belong to.
 * Anything out of sequence, or a checksum that changes, makes the pieces orphans, which
 * are ignored, as is a complete name whose checksum does not match the short entry.
 */
struct long_name {
    uint16_t units[LFN_MAX_UNITS];
    uint32_t entry_count;  /* entries in this name (sequence number of the first one) */
    uint32_t expected;     /* next sequence number wanted; 0 = nothing in progress */
    bool complete;         /* entry 1 seen: only the short entry is missing */
    uint8_t checksum;
};

static void long_name_reset(struct long_name *name)
{
    name->entry_count = 0;
    name->expected = 0;
    name->complete = false;
}

static void long_name_add(struct long_name *name, const uint8_t *entry)
{
    /* Where the 13 UTF-16 units of an LFN entry sit within it. */
    static const uint8_t unit_offsets[LFN_UNITS_PER_ENTRY] = {1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30};
    uint32_t order = entry[LFN_ORDER];
    uint32_t sequence = order & ~LFN_LAST_FLAG;

    if (sequence == 0 || sequence > LFN_MAX_ENTRIES || entry[LFN_TYPE] != 0) {
        long_name_reset(name);
        return;
    }
    if (order & LFN_LAST_FLAG) {
        name->entry_count = sequence;
        name->checksum = entry[LFN_CHECKSUM];
    } else if (name->expected == 0 || sequence != name->expected ||
               entry[LFN_CHECKSUM] != name->checksum) {
        long_name_reset(name);
        return;
    }
    uint16_t *units = name->units + (sequence - 1) * LFN_UNITS_PER_ENTRY;
    for (uint32_t i = 0; i < LFN_UNITS_PER_ENTRY; i++)
        units[i] = get16(entry + unit_offsets[i]);
    name->expected = sequence - 1;
    name->complete = sequence == 1;
}

/* The long name's length if it is complete and belongs to this short entry, else 0. */
static uint32_t long_name_length(const struct long_name *name, const uint8_t *short_entry)
{
    if (!name->complete || name->checksum != short_name_checksum(short_entry))
        return 0;
    /* NUL-terminated unless it fills its last entry exactly; padding after NUL is 0xFFFF. */
    uint32_t max = name->entry_count * LFN_UNITS_PER_ENTRY, len = 0;
    while (len < max && name->units[len] != 0)
        len++;
    return len <= NAME_MAX_UNITS ? len : 0;
}

/* Searches one directory for a name (UTF-16), by long name or by 8.3 name. */
static enum fat_error dir_find(struct fat_volume *vol, uint32_t dir_cluster, const uint16_t *wanted,
                               uint32_t wanted_len, struct fat_file *out)
{
    struct dir_cursor cursor;
    struct long_name long_name;
    enum fat_error err = dir_open(vol, dir_cluster, &cursor);
    if (err != FAT_OK)
        return err;
    long_name_reset(&long_name);

    for (;;) {
        const uint8_t *entry;
        uint64_t entry_offset;
        bool end;
        err = dir_next(vol, &cursor, &entry, &entry_offset, &end);
        if (err != FAT_OK)
            return err;
        if (end || entry[0] == DIR_END_MARK)
            return FAT_E_NOT_FOUND;
        if (entry[0] == DIR_FREE_MARK) {
            long_name_reset(&long_name);
            continue;
        }
        uint8_t attributes = entry[DIR_ATTR];
        if ((attributes & ATTR_LONG_NAME_MASK) == ATTR_LONG_NAME) {
            long_name_add(&long_name, entry);
            continue;
        }
        if (attributes & FAT_ATTR_VOLUME_ID) {
            long_name_reset(&long_name);
            continue;
        }

        uint32_t long_len = long_name_length(&long_name, entry);
        uint16_t short_name[12];
        uint32_t short_len = short_name_utf16(entry, short_name);
        bool match = (long_len > 0 && names_equal(long_name.units, long_len, wanted, wanted_len)) ||
                     names_equal(short_name, short_len, wanted, wanted_len);
        long_name_reset(&long_name);
        if (!match)
            continue;

        out->entry_offset = entry_offset;
        out->attributes = attributes;
        out->is_directory = (attributes & FAT_ATTR_DIRECTORY) != 0;
        out->first_cluster = get16(entry + DIR_FIRST_CLUSTER_LO);
        /* The high half is only defined on FAT32 (OS/2 used it for other things). */
        if (vol->type == FAT_TYPE_32)
            out->first_cluster |= (uint32_t)get16(entry + DIR_FIRST_CLUSTER_HI) << 16;
        out->size = out->is_directory ? 0 : get32(entry + DIR_FILE_SIZE);
        return FAT_OK;
    }
}

/* ------------------------------------------------------------------------------------ */
/* Lookup.                                                                               */

static bool is_separator(char c)
{
    return c == '/' || c == '\\';
}

enum fat_error fat_lookup(struct fat_volume *vol, const char *path, struct fat_file *out)
{
    if (vol == NULL || path == NULL || out == NULL)
        return FAT_E_INVALID_ARG;

    /* Field by field: an initializer would let clang -O0 zero the padding with memset. */
    struct fat_file current;
    current.entry_offset = 0;
    current.first_cluster = vol->root_cluster;
    current.size = 0;
    current.attributes = FAT_ATTR_DIRECTORY;
    current.is_directory = true;
    const char *p = path;

    for (;;) {
        while (is_separator(*p))
            p++;
        if (*p == '\0')
            break;
        const char *start = p;
        while (*p != '\0' && !is_separator(*p))
            p++;
        size_t len = (size_t)(p - start);
        if (len == 1 && start[0] == '.')
            continue;

        uint16_t name[NAME_MAX_UNITS];
        uint32_t name_len;
        if (!utf8_to_utf16((const uint8_t *)start, len, name, &name_len))
            return FAT_E_BAD_PATH;
        if (!current.is_directory)
            return FAT_E_NOT_A_DIR;
        enum fat_error err = dir_find(vol, current.first_cluster, name, name_len, &current);
        if (err != FAT_OK)
            return err;
    }
    *out = current;
    return FAT_OK;
}

/* ------------------------------------------------------------------------------------ */
/* Mapping.                                                                              */

typedef enum fat_error (*extent_sink)(void *ctx, const struct fat_extent *extent);

/*
 * Walks the file's whole chain, handing each maximal contiguous run of its data to sink,
 * in file order.  Clusters past the file size are checked but not mapped.
 */
static enum fat_error walk_extents(struct fat_volume *vol, const struct fat_file *file,
                                   extent_sink sink, void *sink_ctx)
{
    if (file->is_directory)
        return FAT_E_NOT_A_FILE;
    if (file->size == 0)
        return FAT_OK;
    if (file->first_cluster == 0)
        return FAT_E_CHAIN_SHORT;
    if (!cluster_in_range(vol, file->first_cluster))
        return FAT_E_CORRUPT_CHAIN;

    uint64_t cluster_bytes = vol->bytes_per_cluster;
    uint64_t clusters_needed = (file->size + cluster_bytes - 1) / cluster_bytes;
    uint64_t clusters_mapped = 1;
    struct fat_extent run = {
        .file_offset = 0,
        .volume_offset = cluster_offset(vol, file->first_cluster),
        .length = cluster_bytes,
    };
    struct chain chain;
    enum fat_error err;
    chain_start(&chain, file->first_cluster);

    for (;;) {
        bool at_end;
        err = chain_next(vol, &chain, &at_end);
        if (err != FAT_OK)
            return err;
        if (at_end)
            break;
        if (clusters_mapped == clusters_needed)
            continue;
        clusters_mapped++;
        uint64_t offset = cluster_offset(vol, chain.cluster);
        if (offset == run.volume_offset + run.length) {
            run.length += cluster_bytes;
            continue;
        }
        err = sink(sink_ctx, &run);
        if (err != FAT_OK)
            return err;
        run.file_offset += run.length;
        run.volume_offset = offset;
        run.length = cluster_bytes;
    }
    if (clusters_mapped < clusters_needed)
        return FAT_E_CHAIN_SHORT;
    run.length = file->size - run.file_offset; /* the last cluster is usually partly used */
    return sink(sink_ctx, &run);
}

struct extent_array {
    struct fat_extent *extents; /* NULL when only counting */
    uint32_t capacity;
    uint32_t count;
};

static enum fat_error store_extent(void *ctx, const struct fat_extent *extent)
{
    struct extent_array *array = ctx;
    if (array->extents != NULL && array->count < array->capacity)
        array->extents[array->count] = *extent;
    array->count++; /* cannot wrap: at most one extent per cluster, < 2^28 */
    return FAT_OK;
}

enum fat_error fat_map(struct fat_volume *vol, const struct fat_file *file,
                       struct fat_extent *extents, uint32_t capacity, uint32_t *extent_count)
{
    if (vol == NULL || file == NULL || extent_count == NULL)
        return FAT_E_INVALID_ARG;
    struct extent_array array = {.extents = extents, .capacity = capacity, .count = 0};
    enum fat_error err = walk_extents(vol, file, store_extent, &array);
    if (err != FAT_OK)
        return err;
    *extent_count = array.count;
    if (extents != NULL && array.count > capacity)
        return FAT_E_BUFFER_TOO_SMALL;
    return FAT_OK;
}

bool fat_extent_lookup(const struct fat_extent *extents, uint32_t count, uint64_t file_offset,
                       uint64_t *volume_offset, uint64_t *contiguous_bytes)
{
    if (extents == NULL || count == 0)
        return false;
    /* Find the last extent starting at or before file_offset. */
    uint32_t low = 0, high = count;
    while (high - low > 1) {
        uint32_t mid = low + (high - low) / 2;
        if (extents[mid].file_offset <= file_offset)
            low = mid;
        else
            high = mid;
    }
    const struct fat_extent *extent = &extents[low];
    if (file_offset < extent->file_offset || file_offset - extent->file_offset >= extent->length)
        return false;
    uint64_t into = file_offset - extent->file_offset;
    *volume_offset = extent->volume_offset + into;
    *contiguous_bytes = extent->length - into;
    return true;
}

/* ------------------------------------------------------------------------------------ */
/* Whole-file reads.                                                                     */

struct file_reader {
    struct fat_volume *vol;
    uint8_t *buf;
};

/* Whole sectors go straight into the caller's buffer; a partial last sector goes
   through the cache so the read callback only ever sees whole sectors. */
static enum fat_error read_extent(void *ctx, const struct fat_extent *extent)
{
    struct file_reader *reader = ctx;
    struct fat_volume *vol = reader->vol;
    /* extent->length <= file size <= UINT32_MAX, so the casts are exact. */
    uint32_t whole = (uint32_t)(extent->length & ~(uint64_t)(vol->bytes_per_sector - 1));
    uint32_t tail = (uint32_t)extent->length - whole;
    uint8_t *dst = reader->buf + extent->file_offset;

    if (whole > 0 && vol->read(vol->read_ctx, extent->volume_offset, dst, whole) != 0)
        return FAT_E_IO;
    if (tail > 0) {
        const uint8_t *src;
        enum fat_error err = cache_get(vol, &vol->dir_cache, extent->volume_offset + whole, tail, &src);
        if (err != FAT_OK)
            return err;
        copy_bytes(dst + whole, src, tail);
    }
    return FAT_OK;
}

enum fat_error fat_read_file(struct fat_volume *vol, const struct fat_file *file, void *buf,
                             uint32_t capacity)
{
    if (vol == NULL || file == NULL || (buf == NULL && file->size != 0))
        return FAT_E_INVALID_ARG;
    if (file->is_directory)
        return FAT_E_NOT_A_FILE;
    if (file->size > capacity)
        return FAT_E_FILE_TOO_LARGE;
    struct file_reader reader = {.vol = vol, .buf = buf};
    return walk_extents(vol, file, read_extent, &reader);
}

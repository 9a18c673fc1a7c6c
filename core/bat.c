/*
 * bat.c - the block allocation table (spec 2.4, 2.5): geometry, loading, validation.
 *
 * Payload and sector-bitmap entries are interleaved: the ChunkRatio payload entries of
 * a chunk are followed by that chunk's sector-bitmap entry.  Payload block i is entry
 * i + i / ChunkRatio (trap T7: divide by ChunkRatio, not ChunkRatio + 1).
 */
#include "vhdx_int.h"

uint32_t vhdx_chunk_ratio(uint32_t block_size, uint32_t logical_sector_size)
{
    /* A sector-bitmap block has 2^23 bits, one per logical sector. */
    return (uint32_t)(((uint64_t)1 << 23) * logical_sector_size / block_size);
}

uint64_t vhdx_bat_payload_index(uint64_t block, uint32_t chunk_ratio)
{
    return block + block / chunk_ratio;
}

uint64_t vhdx_bat_bitmap_index(uint64_t chunk, uint32_t chunk_ratio)
{
    return chunk * ((uint64_t)chunk_ratio + 1) + chunk_ratio;
}

/*
 * Spec 2.5 (trap T8): a dynamic or fixed file needs entries up to its last payload
 * block; a differencing file up to the sector-bitmap entry of its last chunk.
 */
uint64_t vhdx_bat_entry_count(uint64_t virtual_size, uint32_t block_size,
                              uint32_t logical_sector_size, bool differencing)
{
    uint32_t ratio = vhdx_chunk_ratio(block_size, logical_sector_size);
    uint64_t payload_blocks = (virtual_size + block_size - 1) / block_size;
    uint64_t bitmap_blocks = (payload_blocks + ratio - 1) / ratio;

    if (payload_blocks == 0)
        return 0;
    if (differencing)
        return bitmap_blocks * ((uint64_t)ratio + 1);
    return payload_blocks + (payload_blocks - 1) / ratio;
}

/* A file range some BAT entry points at, for the overlap check. */
struct extent {
    uint64_t start;
    uint64_t length;
    uint64_t entry;
};

static bool extent_before(const struct extent *a, const struct extent *b)
{
    return a->start < b->start || (a->start == b->start && a->entry < b->entry);
}

/* Heapsort: no recursion, no extra memory, O(n log n) even for hostile tables. */
static void sift_down(struct extent *e, uint64_t root, uint64_t n)
{
    for (;;) {
        uint64_t child = 2 * root + 1;
        struct extent tmp;

        if (child >= n)
            return;
        if (child + 1 < n && extent_before(&e[child], &e[child + 1]))
            child++;
        if (!extent_before(&e[root], &e[child]))
            return;
        tmp = e[root];
        e[root] = e[child];
        e[child] = tmp;
        root = child;
    }
}

static void sort_extents(struct extent *e, uint64_t n)
{
    for (uint64_t i = n / 2; i-- > 0;)
        sift_down(e, i, n);
    for (uint64_t end = n; end-- > 1;) {
        struct extent tmp = e[0];

        e[0] = e[end];
        e[end] = tmp;
        sift_down(e, 0, end);
    }
}

/* What a block at [start, start+length) collides with, or NULL. */
static const char *collides_with(const struct vhdx_disk *disk, uint64_t start,
                                 uint64_t length)
{
    if (ranges_overlap(start, length, disk->header.log_offset, disk->header.log_length))
        return "the log";
    if (ranges_overlap(start, length, disk->bat_offset, disk->bat_length))
        return "the BAT region";
    if (ranges_overlap(start, length, disk->metadata_offset, disk->metadata_length))
        return "the metadata region";
    for (uint32_t r = 0; r < disk->region_count; r++) {
        if (ranges_overlap(start, length, disk->regions[r].offset, disk->regions[r].length))
            return "another region";
    }
    return NULL;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* Check the state of entry `index`; return whether it points at file space. */
static int check_state(struct vhdx_disk *disk, uint64_t index, uint64_t entry,
                       bool is_bitmap, bool *allocated)
{
    unsigned state = (unsigned)(entry & BAT_STATE_MASK);

    *allocated = false;
    if (is_bitmap) {
        if (state == SB_NOT_PRESENT)
            return VHDX_OK;
        if (state != SB_PRESENT)
            return problem(disk, false, VHDX_E_BAT_STATE, index, state,
                           "not a sector bitmap state");
        /* Seen in real non-differencing files (digest 8.5): tolerated, never read. */
        if (!disk->has_parent)
            quirk(disk, VHDX_E_BAT_STATE, index, state,
                  "a present sector bitmap in a non-differencing file");
        *allocated = true;
        return VHDX_OK;
    }
    switch (state) {
    case PAYLOAD_NOT_PRESENT:
    case PAYLOAD_UNDEFINED:
    case PAYLOAD_ZERO:
    case PAYLOAD_UNMAPPED:
        return VHDX_OK;
    case PAYLOAD_UNMAPPED_V095:
        /* The v0.95 draft's UNMAPPED (trap T5); old QEMU wrote it. Reads as zeros. */
        quirk(disk, VHDX_E_BAT_STATE, index, state, "the draft UNMAPPED value");
        return VHDX_OK;
    case PAYLOAD_FULLY_PRESENT:
        *allocated = true;
        return VHDX_OK;
    case PAYLOAD_PARTIALLY_PRESENT:
        if (!disk->has_parent)
            return problem(disk, false, VHDX_E_BAT_STATE, index, state,
                           "PARTIALLY_PRESENT, which only differencing files may use");
        *allocated = true;
        return VHDX_OK;
    default:
        return problem(disk, false, VHDX_E_BAT_STATE, index, state, "a reserved value");
    }
}

/*
 * Every allocated block must lie after the header section, inside the file (a last
 * block may end early if the part missing is beyond the virtual disk), clear of the
 * regions and the log, and clear of every other block.
 */
static int validate_entries(struct vhdx_disk *disk, struct extent *extents,
                            uint64_t *extent_count)
{
    uint64_t n = 0;
    int rc;

    disk->alloc_end = align_up_mib(max_u64(disk->header.log_offset + disk->header.log_length,
                                           HEADER_SECTION_SIZE));
    for (uint32_t r = 0; r < disk->region_count; r++)
        disk->alloc_end = max_u64(disk->alloc_end,
                                  align_up_mib(disk->regions[r].offset + disk->regions[r].length));

    for (uint64_t i = 0; i < disk->bat_entries; i++) {
        uint64_t entry = disk->bat[i];
        uint64_t offset = entry & BAT_OFFSET_MASK;
        bool is_bitmap = i % ((uint64_t)disk->chunk_ratio + 1) == disk->chunk_ratio;
        uint64_t length, needed, end;
        bool allocated;
        const char *what;

        if (entry & BAT_RESERVED_MASK) {
            rc = problem(disk, false, VHDX_E_BAT_RESERVED, i, entry & BAT_RESERVED_MASK, NULL);
            if (rc)
                return rc;
        }
        rc = check_state(disk, i, entry, is_bitmap, &allocated);
        if (rc)
            return rc;
        if (!allocated)
            continue;
        if (is_bitmap) {
            length = needed = SECTOR_BITMAP_SIZE;
        } else {
            uint64_t block = i - i / ((uint64_t)disk->chunk_ratio + 1);
            uint64_t block_start = block << disk->block_shift;

            if (block >= disk->payload_blocks)
                continue;   /* differencing padding past the disk: never read */
            length = disk->block_size;
            needed = disk->virtual_size - block_start;
            if (needed > length)
                needed = length;
        }
        if (offset < HEADER_SECTION_SIZE) {
            rc = problem(disk, false, VHDX_E_BAT_IN_HEADER, i, offset, NULL);
            if (rc)
                return rc;
            continue;
        }
        /* Subtract, never add: FileOffsetMB near 2^44 would wrap offset + needed. */
        if (offset > disk->file_size || needed > disk->file_size - offset) {
            rc = problem(disk, false, VHDX_E_BAT_PAST_EOF, i, offset, NULL);
            if (rc)
                return rc;
            continue;
        }
        what = collides_with(disk, offset, length);
        if (what) {
            rc = problem(disk, false, VHDX_E_BAT_OVERLAP, i, offset, what);
            if (rc)
                return rc;
            continue;
        }
        extents[n].start = offset;
        extents[n].length = length;
        extents[n].entry = i;
        n++;
        end = align_up_mib(offset + length);
        disk->alloc_end = max_u64(disk->alloc_end, end);
    }
    *extent_count = n;
    return VHDX_OK;
}

static int check_blocks_disjoint(struct vhdx_disk *disk, struct extent *extents, uint64_t n)
{
    int rc;

    sort_extents(extents, n);
    for (uint64_t k = 1; k < n; k++) {
        const struct extent *prev = &extents[k - 1], *cur = &extents[k];

        if (cur->start < prev->start + prev->length) {
            uint64_t first = prev->entry < cur->entry ? prev->entry : cur->entry;
            uint64_t second = prev->entry < cur->entry ? cur->entry : prev->entry;

            rc = problem(disk, false, VHDX_E_BAT_SHARED, first, second, NULL);
            if (rc)
                return rc;
        }
    }
    return VHDX_OK;
}

int bat_load(struct vhdx_disk *disk)
{
    const uint64_t per_sector = LOG_SECTOR_SIZE / 8;
    struct extent *extents;
    uint64_t extent_count = 0, bytes;
    int rc;

    disk->chunk_ratio = vhdx_chunk_ratio(disk->block_size, disk->logical_sector_size);
    disk->payload_blocks = (disk->virtual_size + disk->block_size - 1) >> disk->block_shift;
    disk->bat_entries = vhdx_bat_entry_count(disk->virtual_size, disk->block_size,
                                             disk->logical_sector_size, disk->has_parent);
    if ((uint64_t)disk->bat_length / 8 < disk->bat_entries)
        return problem(disk, true, VHDX_E_BAT_TOO_SMALL, disk->bat_length, disk->bat_entries,
                       NULL);
    /* Whole 4 KiB sectors, so the write path can log a sector exactly as it stands. */
    disk->bat_loaded = (disk->bat_entries + per_sector - 1) / per_sector * per_sector;
    if (disk->bat_loaded > disk->bat_length / 8)
        disk->bat_loaded = disk->bat_length / 8;
    disk->bat_sectors = disk->bat_loaded / per_sector;
    bytes = disk->bat_loaded * 8;
    if (bytes != (size_t)bytes)
        return fail(disk, VHDX_E_NOMEM, bytes, 0, NULL);
    disk->bat = core_alloc(disk, (size_t)bytes);
    if (!disk->bat)
        return disk->diag.code;
    rc = file_read(disk, disk->bat_offset, disk->bat, (size_t)bytes);
    if (rc)
        return rc;
    for (uint64_t i = 0; i < disk->bat_loaded; i++)
        disk->bat[i] = get_le64((const uint8_t *)&disk->bat[i]);

    /* Size the overlap check by the entries that point at file space. */
    for (uint64_t i = 0; i < disk->bat_entries; i++) {
        unsigned state = (unsigned)(disk->bat[i] & BAT_STATE_MASK);

        extent_count += state == PAYLOAD_FULLY_PRESENT || state == PAYLOAD_PARTIALLY_PRESENT;
    }
    extents = core_alloc(disk, (size_t)(extent_count ? extent_count : 1) * sizeof *extents);
    if (!extents)
        return disk->diag.code;
    extent_count = 0;
    rc = validate_entries(disk, extents, &extent_count);
    if (!rc)
        rc = check_blocks_disjoint(disk, extents, extent_count);
    core_free(disk, extents);
    return rc;
}

/*
 * bat.c - the block allocation table (see bat.h).
 *
 * Payload and sector-bitmap entries are interleaved: the ChunkRatio payload entries of
 * a chunk are followed by that chunk's sector-bitmap entry.  Payload block i is entry
 * i + i / ChunkRatio (trap T7: divide by ChunkRatio, not ChunkRatio + 1).
 */
#include "bat.h"

#include "disk.h"

/* Entries read at a time while validating (64 KiB). */
#define VALIDATE_CHUNK 8192u

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

int bat_setup(struct vhdx_disk *disk)
{
    struct bat *bat = &disk->bat;
    const struct geometry *g = &disk->geometry;

    mem_zero(bat, sizeof *bat);
    bat->chunk_ratio = vhdx_chunk_ratio(g->block_size, g->logical_sector_size);
    bat->payload_blocks = (g->virtual_size + g->block_size - 1) >> g->block_shift;
    bat->bitmap_blocks = (bat->payload_blocks + bat->chunk_ratio - 1) / bat->chunk_ratio;
    bat->entries = vhdx_bat_entry_count(g->virtual_size, g->block_size,
                                        g->logical_sector_size, g->has_parent);
    if ((uint64_t)disk->regions.bat_length / 8 < bat->entries)
        return problem(disk, true, VHDX_E_BAT_TOO_SMALL, disk->regions.bat_length,
                       bat->entries, NULL);
    return VHDX_OK;
}

static bool is_bitmap_entry(const struct bat *bat, uint64_t index)
{
    return index % ((uint64_t)bat->chunk_ratio + 1) == bat->chunk_ratio;
}

/* --- validation at open -------------------------------------------------------------- */

/* Check the state of entry `index`; say whether it points at file space. */
static int check_state(struct vhdx_disk *disk, uint64_t index, uint64_t entry,
                       bool is_bitmap, bool *allocated)
{
    unsigned state = (unsigned)(entry & BAT_STATE_MASK);
    bool differencing = disk->geometry.has_parent;

    *allocated = false;
    if (is_bitmap) {
        if (state == SB_NOT_PRESENT)
            return VHDX_OK;
        if (state != SB_PRESENT)
            return problem(disk, false, VHDX_E_BAT_STATE, index, state,
                           "not a sector bitmap state");
        /* Seen in real non-differencing files (digest 8.5): tolerated, never read. */
        if (!differencing)
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
        /* The v0.95 draft's UNMAPPED (trap T5); old QEMU wrote it.  Reads as zeros. */
        quirk(disk, VHDX_E_BAT_STATE, index, state, "the draft UNMAPPED value");
        return VHDX_OK;
    case PAYLOAD_FULLY_PRESENT:
        *allocated = true;
        return VHDX_OK;
    case PAYLOAD_PARTIALLY_PRESENT:
        if (!differencing)
            return problem(disk, false, VHDX_E_BAT_STATE, index, state,
                           "PARTIALLY_PRESENT, which only differencing files may use");
        *allocated = true;
        return VHDX_OK;
    default:
        return problem(disk, false, VHDX_E_BAT_STATE, index, state, "a reserved value");
    }
}

/* What a block at [start, start+length) collides with among the fixed objects, or NULL. */
static const char *collides_with(const struct vhdx_disk *disk, uint64_t start,
                                 uint64_t length)
{
    const struct regions *regions = &disk->regions;
    const struct vhdx_header *h = &disk->headers.current;

    if (ranges_overlap(start, length, h->log_offset, h->log_length))
        return "the log";
    if (ranges_overlap(start, length, regions->bat_offset, regions->bat_length))
        return "the BAT region";
    if (ranges_overlap(start, length, regions->metadata_offset, regions->metadata_length))
        return "the metadata region";
    for (uint32_t r = 0; r < regions->count; r++) {
        if (ranges_overlap(start, length, regions->list[r].offset, regions->list[r].length))
            return "another region";
    }
    return NULL;
}

/*
 * Where the block of entry `index` lies: false when the entry points at no file space
 * (or at space beyond the disk: differencing padding).  `needed` is what must be inside
 * the file: a last block may end early if the part missing is beyond the virtual disk.
 */
static bool block_extent(const struct vhdx_disk *disk, uint64_t index, uint64_t entry,
                         uint64_t *length, uint64_t *needed)
{
    const struct bat *bat = &disk->bat;
    const struct geometry *g = &disk->geometry;
    uint64_t block, block_start;

    if (is_bitmap_entry(bat, index)) {
        *length = *needed = SECTOR_BITMAP_SIZE;
        return true;
    }
    block = index - index / ((uint64_t)bat->chunk_ratio + 1);
    if (block >= bat->payload_blocks)
        return false;
    block_start = block << g->block_shift;
    *length = g->block_size;
    *needed = min_u64(g->virtual_size - block_start, g->block_size);
    (void)entry;
    return true;
}

/*
 * Read entries [first, first + count) of the BAT (as stored: little-endian), in whole
 * pages where the region has them, so the pages can go to the cache as they pass.
 */
static int read_entries(struct vhdx_disk *disk, uint64_t first, uint32_t count, uint8_t *raw,
                        bool preload)
{
    uint64_t offset = disk->regions.bat_offset + first * 8;
    uint64_t bytes = (uint64_t)count * 8, pages = (bytes + PAGE_SIZE - 1) / PAGE_SIZE * PAGE_SIZE;
    int rc;

    if (first * 8 + pages <= disk->regions.bat_length)
        bytes = pages;
    rc = file_read(disk, offset, raw, (size_t)bytes);
    for (uint64_t p = 0; preload && !rc && p + PAGE_SIZE <= bytes; p += PAGE_SIZE)
        cache_preload(disk, offset + p, raw + p);
    return rc;
}

/* Is entry `index` an allocated block that the placement checks accepted? */
static bool placed_block(const struct vhdx_disk *disk, uint64_t index, uint64_t entry,
                         uint64_t *offset, uint64_t *length)
{
    unsigned state = (unsigned)(entry & BAT_STATE_MASK);
    bool is_bitmap = is_bitmap_entry(&disk->bat, index);
    uint64_t needed;

    if (is_bitmap ? state != SB_PRESENT
                  : state != PAYLOAD_FULLY_PRESENT && state != PAYLOAD_PARTIALLY_PRESENT)
        return false;
    if (!block_extent(disk, index, entry, length, &needed))
        return false;
    *offset = entry & BAT_OFFSET_MASK;
    return *offset >= HEADER_SECTION_SIZE && range_fits(*offset, needed, disk->file.size) &&
           !collides_with(disk, *offset, *length);
}

/*
 * The first entry before `limit` whose block overlaps [offset, offset + length): the
 * space map says only that the space was taken, so look again (only to name it).
 */
static int find_sharer(struct vhdx_disk *disk, uint64_t limit, uint64_t offset,
                       uint64_t length, uint64_t *sharer, uint8_t *buffer)
{
    for (uint64_t first = 0; first < limit; first += VALIDATE_CHUNK) {
        uint32_t count = (uint32_t)min_u64(VALIDATE_CHUNK, limit - first);
        int rc = read_entries(disk, first, count, buffer, false);

        if (rc)
            return rc;
        for (uint32_t k = 0; k < count; k++) {
            uint64_t other_offset, other_length;

            if (placed_block(disk, first + k, get_le64(buffer + 8 * k), &other_offset,
                             &other_length) &&
                ranges_overlap(offset, length, other_offset, other_length)) {
                *sharer = first + k;
                return VHDX_OK;
            }
        }
    }
    *sharer = limit;
    return VHDX_OK;
}

/*
 * At a chunk's sector-bitmap entry (it follows the chunk's payload entries): a
 * PARTIALLY_PRESENT block needs its chunk's bitmap block present (spec 2.5.1.2).
 */
static int check_chunk_bitmap(struct vhdx_disk *disk, uint64_t index, unsigned state)
{
    struct bat *bat = &disk->bat;
    uint64_t partial = bat->chunk_partial;

    bat->chunk_partial = 0;
    if (!partial || state == SB_PRESENT)
        return VHDX_OK;
    return problem(disk, false, VHDX_E_BITMAP_MISSING, partial - 1,
                   index / ((uint64_t)bat->chunk_ratio + 1), NULL);
}

static int check_entry(struct vhdx_disk *disk, uint64_t index, uint64_t entry,
                       uint8_t *scratch)
{
    struct bat *bat = &disk->bat;
    bool is_bitmap = is_bitmap_entry(bat, index), allocated, overlaps;
    uint64_t offset = entry & BAT_OFFSET_MASK, length, needed, sharer;
    unsigned state = (unsigned)(entry & BAT_STATE_MASK);
    const char *what;
    int rc;

    if (entry & BAT_RESERVED_MASK) {
        rc = problem(disk, false, VHDX_E_BAT_RESERVED, index, entry & BAT_RESERVED_MASK, NULL);
        if (rc)
            return rc;
    }
    rc = check_state(disk, index, entry, is_bitmap, &allocated);
    if (!rc && is_bitmap)
        rc = check_chunk_bitmap(disk, index, state);
    else if (!rc && state == PAYLOAD_PARTIALLY_PRESENT && disk->geometry.has_parent &&
             !bat->chunk_partial)
        bat->chunk_partial = index + 1;
    if (rc || !allocated || !block_extent(disk, index, entry, &length, &needed))
        return rc;
    if (!is_bitmap) {
        bat->present += state == PAYLOAD_FULLY_PRESENT;
        bat->partial += state == PAYLOAD_PARTIALLY_PRESENT;
    }
    if (offset < HEADER_SECTION_SIZE)
        return problem(disk, false, VHDX_E_BAT_IN_HEADER, index, offset, NULL);
    /* range_fits subtracts: offset + needed wraps for FileOffsetMB near 2^44. */
    if (!range_fits(offset, needed, disk->file.size))
        return problem(disk, false, VHDX_E_BAT_PAST_EOF, index, offset, NULL);
    what = collides_with(disk, offset, length);
    if (what)
        return problem(disk, false, VHDX_E_BAT_OVERLAP, index, offset, what);
    space_claim(disk, offset, length, &overlaps);
    if (!overlaps)
        return VHDX_OK;
    if (disk->report.checking && !problem_shown(disk, VHDX_PART_BAT))
        return problem(disk, false, VHDX_E_BAT_SHARED, 0, index, NULL);  /* only counted */
    rc = find_sharer(disk, index, offset, length, &sharer, scratch);
    if (rc)
        return rc;
    return problem(disk, false, VHDX_E_BAT_SHARED, sharer, index, NULL);
}

int bat_validate(struct vhdx_disk *disk)
{
    struct bat *bat = &disk->bat;
    uint8_t *chunk = core_alloc(disk, VALIDATE_CHUNK * 8);
    uint8_t *scratch = core_alloc(disk, VALIDATE_CHUNK * 8);
    int rc = VHDX_OK;

    if (!chunk || !scratch) {
        rc = disk->report.diag.code;
        goto out;
    }
    for (uint64_t first = 0; first < bat->entries && !rc; first += VALIDATE_CHUNK) {
        uint32_t count = (uint32_t)min_u64(VALIDATE_CHUNK, bat->entries - first);

        rc = read_entries(disk, first, count, chunk, true);
        for (uint32_t k = 0; k < count && !rc; k++)
            rc = check_entry(disk, first + k, get_le64(chunk + 8 * k), scratch);
    }
out:
    core_free(disk, scratch);
    core_free(disk, chunk);
    return rc;
}

/* --- entries through the cache ------------------------------------------------------ */

static uint64_t page_offset(const struct vhdx_disk *disk, uint64_t index)
{
    return disk->regions.bat_offset + index / BAT_ENTRIES_PER_PAGE * PAGE_SIZE;
}

int bat_get_payload(struct vhdx_disk *disk, uint64_t block, uint64_t *entry)
{
    uint64_t index;
    const uint8_t *page;
    int rc;

    if (block >= disk->bat.payload_blocks)
        return fail(disk, VHDX_E_RANGE, block, block, NULL);
    index = vhdx_bat_payload_index(block, disk->bat.chunk_ratio);
    rc = cache_read(disk, page_offset(disk, index), &page);
    if (!rc)
        *entry = get_le64(page + index % BAT_ENTRIES_PER_PAGE * 8);
    return rc;
}

int bat_set_payload(struct vhdx_disk *disk, uint64_t block, uint64_t entry)
{
    struct bat *bat = &disk->bat;
    uint64_t index, old;
    uint8_t *page, *slot;
    int rc;

    if (block >= bat->payload_blocks)
        return fail(disk, VHDX_E_RANGE, block, block, NULL);
    index = vhdx_bat_payload_index(block, bat->chunk_ratio);
    rc = cache_modify(disk, page_offset(disk, index), &page);
    if (rc)
        return rc;
    slot = page + index % BAT_ENTRIES_PER_PAGE * 8;
    old = get_le64(slot);
    put_le64(slot, entry);
    bat->present -= (old & BAT_STATE_MASK) == PAYLOAD_FULLY_PRESENT;
    bat->partial -= (old & BAT_STATE_MASK) == PAYLOAD_PARTIALLY_PRESENT;
    bat->present += (entry & BAT_STATE_MASK) == PAYLOAD_FULLY_PRESENT;
    bat->partial += (entry & BAT_STATE_MASK) == PAYLOAD_PARTIALLY_PRESENT;
    return VHDX_OK;
}

int bat_get_bitmap(struct vhdx_disk *disk, uint64_t chunk, uint64_t *entry)
{
    uint64_t index;
    const uint8_t *page;
    int rc;

    if (chunk >= disk->bat.bitmap_blocks)
        return fail(disk, VHDX_E_RANGE, chunk, chunk, NULL);
    index = vhdx_bat_bitmap_index(chunk, disk->bat.chunk_ratio);
    if (index >= disk->bat.entries) {
        *entry = SB_NOT_PRESENT;    /* a dynamic disk's last chunk has no entry */
        return VHDX_OK;
    }
    rc = cache_read(disk, page_offset(disk, index), &page);
    if (!rc)
        *entry = get_le64(page + index % BAT_ENTRIES_PER_PAGE * 8);
    return rc;
}

int bat_set_bitmap(struct vhdx_disk *disk, uint64_t chunk, uint64_t entry)
{
    uint64_t index;
    uint8_t *page;
    int rc;

    if (chunk >= disk->bat.bitmap_blocks)
        return fail(disk, VHDX_E_RANGE, chunk, chunk, NULL);
    index = vhdx_bat_bitmap_index(chunk, disk->bat.chunk_ratio);
    if (index >= disk->bat.entries)
        return fail(disk, VHDX_E_RANGE, index, index, NULL);
    rc = cache_modify(disk, page_offset(disk, index), &page);
    if (!rc)
        put_le64(page + index % BAT_ENTRIES_PER_PAGE * 8, entry);
    return rc;
}

/*
 * space.c - where things are in the file and where new blocks go (see space.h).
 */
#include "space.h"

#include "disk.h"

static void mark(struct space *s, uint64_t offset, uint64_t length, bool *overlaps)
{
    uint64_t first = offset / MIB, last;

    if (first >= s->map_bits || !length)
        return;
    last = min_u64(s->map_bits, first + (length + MIB - 1) / MIB);
    for (uint64_t bit = first; bit < last; bit++) {
        uint8_t mask = (uint8_t)(1u << (bit % 8));

        if (s->map[bit / 8] & mask)
            *overlaps = true;
        s->map[bit / 8] |= mask;
    }
}

/* The end of an object, as far as allocation goes (hostile ones may not overflow). */
static void extend_end(struct space *s, uint64_t offset, uint64_t length)
{
    uint64_t end;

    if (!add_overflows(offset, length, &end) && end <= SPACE_MAP_MAX_FILE)
        s->end = max_u64(s->end, align_up_mib(end));
}

int space_start(struct vhdx_disk *disk)
{
    struct space *s = &disk->space;
    const struct vhdx_header *h = &disk->headers.current;
    bool ignored = false;

    mem_zero(s, sizeof *s);
    if (disk->file.size > SPACE_MAP_MAX_FILE)
        return fail(disk, VHDX_E_FILE_TOO_LARGE, disk->file.size, SPACE_MAP_MAX_FILE, NULL);
    s->map_bits = (disk->file.size + MIB - 1) / MIB;
    s->map = core_alloc(disk, (size_t)(s->map_bits / 8 + 1));
    if (!s->map)
        return disk->report.diag.code;
    mark(s, 0, HEADER_SECTION_SIZE, &ignored);
    extend_end(s, 0, HEADER_SECTION_SIZE);
    mark(s, h->log_offset, h->log_length, &ignored);
    extend_end(s, h->log_offset, h->log_length);
    for (uint32_t r = 0; r < disk->regions.count; r++) {
        const struct vhdx_region *region = &disk->regions.list[r];

        mark(s, region->offset, region->length, &ignored);
        extend_end(s, region->offset, region->length);
    }
    return VHDX_OK;
}

void space_claim(struct vhdx_disk *disk, uint64_t offset, uint64_t length, bool *overlaps)
{
    *overlaps = false;
    mark(&disk->space, offset, length, overlaps);
    extend_end(&disk->space, offset, length);
}

void space_finish(struct vhdx_disk *disk)
{
    struct space *s = &disk->space;

    core_free(disk, s->map);
    s->map = NULL;
    s->map_bits = 0;
    /* Nothing past the current end is known to be zero until a grow makes it so. */
    s->zero_from = disk->file.real_size;
}

uint64_t space_limit(const struct vhdx_disk *disk)
{
    const struct vhdx_header *h = &disk->headers.current;
    uint64_t limit = HEADER_SECTION_SIZE + align_up_mib(h->log_length);

    for (uint32_t r = 0; r < disk->regions.count; r++)
        limit += align_up_mib(disk->regions.list[r].length);
    limit += disk->bat.payload_blocks * disk->geometry.block_size;
    limit += disk->bat.bitmap_blocks * SECTOR_BITMAP_SIZE;
    return 2 * limit + 64ull * MIB;
}

int space_next(struct vhdx_disk *disk, uint64_t size, uint64_t *offset)
{
    struct space *s = &disk->space;
    uint64_t end = s->end + size;
    int rc;

    if (end > disk->file.real_size) {
        rc = file_grow(disk, end);
        if (rc)
            return rc;
        /* [zero_from, file end) reads as zero; a grow that does not zero-fill leaves
         * nothing known. */
        if (!(disk->file.platform.flags & VHDX_PLATFORM_GROW_ZEROES))
            s->zero_from = end;
    }
    *offset = s->end;
    return VHDX_OK;
}

int space_zero(struct vhdx_disk *disk, uint64_t from, uint64_t to)
{
    uint64_t zero_from = disk->space.zero_from;

    if (to > zero_from)
        to = max_u64(from, zero_from);
    return to > from ? file_zero(disk, from, to - from) : VHDX_OK;
}

void space_take(struct vhdx_disk *disk, uint64_t offset, uint64_t size)
{
    struct space *s = &disk->space;
    uint64_t end = offset + size;

    s->end = max_u64(s->end, end);
    s->zero_from = max_u64(s->zero_from, end);
}

int space_reserve(struct vhdx_disk *disk, uint64_t bytes)
{
    struct space *s = &disk->space;
    uint64_t block = disk->geometry.block_size, blocks = bytes / block + (bytes % block != 0);
    uint64_t target;
    int rc;

    if (blocks > (UINT64_MAX - s->end) / block)
        return fail(disk, VHDX_E_NO_SPACE, UINT64_MAX, 0, NULL);
    target = s->end + blocks * block;
    if (target <= disk->file.real_size)
        return VHDX_OK;
    rc = file_grow(disk, target);
    if (rc)
        return rc;
    if (!(disk->file.platform.flags & VHDX_PLATFORM_GROW_ZEROES))
        s->zero_from = target;
    return VHDX_OK;
}

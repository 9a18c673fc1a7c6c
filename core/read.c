/*
 * read.c - reading the virtual disk, and its allocation map: both execute the runs of
 * resolve.c.
 */
#include "disk.h"

int vhdx_read(struct vhdx_disk *disk, uint64_t sector, uint64_t count, void *buffer)
{
    const struct geometry *g = &disk->geometry;
    uint64_t offset = sector << g->sector_shift, length = count << g->sector_shift;
    uint8_t *out = buffer;
    int rc;

    rc = resolve_check(disk, sector, count, buffer);
    while (!rc && length) {
        struct resolved r;

        rc = resolve(disk, offset, length, &r);
        for (uint32_t i = 0; i < r.count && !rc; i++) {
            const struct run *run = &r.runs[i];
            uint8_t *to = out + (run->offset - offset);

            if (run->kind == RUN_DATA)
                rc = file_read(disk, run->file_offset, to, (size_t)run->length);
            else
                mem_zero(to, (size_t)run->length);
        }
        out += r.length;
        offset += r.length;
        length -= r.length;
    }
    return rc;
}

int vhdx_map(struct vhdx_disk *disk, uint64_t sector, uint64_t count, uint64_t *run,
             unsigned *status)
{
    const struct geometry *g = &disk->geometry;
    uint64_t offset = sector << g->sector_shift, length = count << g->sector_shift;
    struct resolved r;
    int rc;

    *run = 0;
    *status = VHDX_MAP_ZERO;
    rc = resolve_check(disk, sector, count, disk);
    if (rc || !count)
        return rc;
    rc = resolve(disk, offset, length, &r);
    if (rc)
        return rc;
    *status = r.runs[0].kind == RUN_DATA ? VHDX_MAP_DATA : VHDX_MAP_ZERO;
    *run = r.runs[0].length;
    /* Data runs that are not contiguous in the file are still data. */
    for (uint32_t i = 1; i < r.count && r.runs[i].kind == r.runs[0].kind; i++)
        *run += r.runs[i].length;
    *run >>= g->sector_shift;
    return VHDX_OK;
}

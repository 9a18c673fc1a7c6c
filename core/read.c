/*
 * read.c - reading the virtual disk, and its allocation map (see read.h): both execute
 * the runs of resolve.c.
 */
#include "read.h"

#include "disk.h"

static int read_range(struct vhdx_disk *disk, uint64_t offset, uint64_t length, uint8_t *out);

/* Bytes of the parent; past the parent's end (a child may be larger) they are zeros. */
static int read_parent(struct vhdx_disk *disk, uint64_t offset, uint64_t length, uint8_t *out)
{
    struct vhdx_disk *parent = disk->chain.parent;
    uint64_t end = parent->geometry.virtual_size;
    uint64_t inside = offset < end ? min_u64(length, end - offset) : 0;

    mem_zero(out + inside, (size_t)(length - inside));
    return inside ? read_range(parent, offset, inside, out) : VHDX_OK;
}

static int read_range(struct vhdx_disk *disk, uint64_t offset, uint64_t length, uint8_t *out)
{
    struct resolved *r = &disk->reader.runs;
    int rc = VHDX_OK;

    while (!rc && length) {
        uint64_t covered;

        rc = resolve(disk, offset, length, r);
        covered = r->length;
        for (uint32_t i = 0; i < r->count && !rc; i++) {
            const struct run *run = &r->runs[i];
            uint8_t *to = out + (run->offset - offset);

            if (run->kind == RUN_DATA)
                rc = file_read(disk, run->file_offset, to, (size_t)run->length);
            else if (run->kind == RUN_PARENT)
                rc = read_parent(disk, run->offset, run->length, to);
            else
                mem_zero(to, (size_t)run->length);
        }
        out += covered;
        offset += covered;
        length -= covered;
    }
    return rc;
}

int vhdx_read(struct vhdx_disk *disk, uint64_t sector, uint64_t count, void *buffer)
{
    unsigned shift = disk->geometry.sector_shift;
    int rc = resolve_check(disk, sector, count, buffer);

    return rc ? rc : read_range(disk, sector << shift, count << shift, buffer);
}

/* The status of the bytes from `offset` on, and how far it goes (at most `length`). */
static int map_range(struct vhdx_disk *disk, uint64_t offset, uint64_t length, uint64_t *run,
                     unsigned *status)
{
    struct resolved *r = &disk->reader.runs;
    enum run_kind kind;
    int rc = resolve(disk, offset, length, r);

    if (rc)
        return rc;
    kind = r->runs[0].kind;
    *run = r->runs[0].length;
    /* Data runs that are not contiguous in the file are still data. */
    for (uint32_t i = 1; i < r->count && r->runs[i].kind == kind; i++)
        *run += r->runs[i].length;
    *status = kind == RUN_DATA ? VHDX_MAP_DATA : VHDX_MAP_ZERO;
    if (kind == RUN_PARENT) {
        struct vhdx_disk *parent = disk->chain.parent;
        uint64_t end = parent->geometry.virtual_size;

        /* Past the parent's end it reads as zeros. */
        if (offset >= end)
            return VHDX_OK;
        return map_range(parent, offset, min_u64(*run, end - offset), run, status);
    }
    return VHDX_OK;
}

int vhdx_map(struct vhdx_disk *disk, uint64_t sector, uint64_t count, uint64_t *run,
             unsigned *status)
{
    unsigned shift = disk->geometry.sector_shift;
    int rc;

    *run = 0;
    *status = VHDX_MAP_ZERO;
    rc = resolve_check(disk, sector, count, disk);
    if (rc || !count)
        return rc;
    rc = map_range(disk, sector << shift, count << shift, run, status);
    *run >>= shift;
    return rc;
}

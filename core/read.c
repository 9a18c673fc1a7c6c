/*
 * read.c - the read path: virtual sectors to file ranges.
 *
 * Only PAYLOAD_BLOCK_FULLY_PRESENT blocks are read from the file.  Every other state of
 * a non-differencing file reads as zeros: NOT_PRESENT, UNDEFINED and UNMAPPED may
 * legally return stale data, but we never expose it (spec 2.5.1.1 footnotes 10/11).
 * Pieces that are contiguous in the file are merged, so a large read inside one block,
 * or across blocks laid out back to back, is one platform read.
 */
#include "vhdx_int.h"

/* Check a sector range against the disk; shared with the write path. */
int check_range(struct vhdx_disk *disk, uint64_t sector, uint64_t count, const void *buffer)
{
    uint64_t total = disk->virtual_size >> disk->sector_shift, end;

    if (count && !buffer)
        return fail(disk, VHDX_E_ARGUMENT, 0, 0, "no buffer");
    if (add_overflows(sector, count, &end) || end > total ||
        count > (SIZE_MAX >> disk->sector_shift))
        return fail(disk, VHDX_E_RANGE, sector, end - 1, NULL);
    if (disk->has_parent)
        return fail(disk, VHDX_E_DIFFERENCING, 0, 0, "reading needs the parent");
    return VHDX_OK;
}

bool block_walk_next(const struct vhdx_disk *disk, struct block_walk *walk)
{
    uint64_t room;

    walk->position += walk->length;
    walk->remaining -= walk->length;
    if (!walk->remaining) {
        walk->length = 0;
        return false;
    }
    walk->block = walk->position >> disk->block_shift;
    walk->in_block = walk->position & (disk->block_size - 1);
    room = disk->block_size - walk->in_block;
    walk->length = room < walk->remaining ? room : walk->remaining;
    walk->entry = disk->bat[vhdx_bat_payload_index(walk->block, disk->chunk_ratio)];
    return true;
}

void block_walk_start(const struct vhdx_disk *disk, struct block_walk *walk, uint64_t sector,
                      uint64_t count)
{
    walk->position = sector << disk->sector_shift;
    walk->remaining = count << disk->sector_shift;
    walk->length = 0;
}

static int run_issue(struct vhdx_disk *disk, const struct io_run *run, bool write)
{
    if (!run->length)
        return VHDX_OK;
    return write ? file_write(disk, run->file_offset, run->buffer, run->length)
                 : file_read(disk, run->file_offset, run->buffer, run->length);
}

/* Extend the run when both the file and the buffer continue it; else issue it and start
 * a new one here. */
int io_run_add(struct vhdx_disk *disk, struct io_run *run, bool write, uint64_t file_offset,
               uint8_t *buffer, uint64_t length)
{
    int rc;

    if (run->length && run->file_offset + run->length == file_offset &&
        run->buffer + run->length == buffer) {
        run->length += (size_t)length;
        return VHDX_OK;
    }
    rc = run_issue(disk, run, write);
    run->file_offset = file_offset;
    run->buffer = buffer;
    run->length = (size_t)length;
    return rc;
}

int io_run_finish(struct vhdx_disk *disk, struct io_run *run, bool write)
{
    int rc = run_issue(disk, run, write);

    run->length = 0;
    return rc;
}

int vhdx_read(struct vhdx_disk *disk, uint64_t sector, uint64_t count, void *buffer)
{
    struct block_walk walk;
    struct io_run run = { 0, NULL, 0 };
    uint8_t *out = buffer;
    int rc;

    rc = check_range(disk, sector, count, buffer);
    if (rc)
        return rc;
    for (block_walk_start(disk, &walk, sector, count); block_walk_next(disk, &walk);
         out += walk.length) {
        if ((walk.entry & BAT_STATE_MASK) == PAYLOAD_FULLY_PRESENT) {
            rc = io_run_add(disk, &run, false, (walk.entry & BAT_OFFSET_MASK) + walk.in_block,
                            out, walk.length);
            if (rc)
                return rc;
        } else {
            mem_zero(out, (size_t)walk.length);
        }
    }
    return io_run_finish(disk, &run, false);
}

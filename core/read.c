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

int vhdx_read(struct vhdx_disk *disk, uint64_t sector, uint64_t count, void *buffer)
{
    uint8_t *out = buffer, *run_buffer = NULL;
    uint64_t position, remaining, run_offset = 0;
    size_t run_length = 0;
    int rc;

    rc = check_range(disk, sector, count, buffer);
    if (rc)
        return rc;
    position = sector << disk->sector_shift;
    remaining = count << disk->sector_shift;
    while (remaining) {
        uint64_t block = position >> disk->block_shift;
        uint64_t in_block = position & (disk->block_size - 1);
        uint64_t piece = disk->block_size - in_block;
        uint64_t entry = disk->bat[vhdx_bat_payload_index(block, disk->chunk_ratio)];

        if (piece > remaining)
            piece = remaining;
        if ((entry & BAT_STATE_MASK) == PAYLOAD_FULLY_PRESENT) {
            uint64_t file_offset = (entry & BAT_OFFSET_MASK) + in_block;

            /* Merge only when both the file and the buffer continue the run. */
            if (run_length && run_offset + run_length == file_offset &&
                run_buffer + run_length == out) {
                run_length += (size_t)piece;
            } else {
                if (run_length && (rc = file_read(disk, run_offset, run_buffer, run_length)))
                    return rc;
                run_offset = file_offset;
                run_buffer = out;
                run_length = (size_t)piece;
            }
        } else {
            mem_zero(out, (size_t)piece);
        }
        out += piece;
        position += piece;
        remaining -= piece;
    }
    if (run_length)
        return file_read(disk, run_offset, run_buffer, run_length);
    return VHDX_OK;
}

/*
 * write.c - the write path and flush.
 *
 * A write to a FULLY_PRESENT block goes to its place in the file.  A write to any other
 * block allocates a new block at the 1 MiB-aligned end of everything allocated: the
 * file grows, the new block is written whole (the request's bytes, zeros elsewhere,
 * because the block read as zeros before), and the BAT entry changes in memory only.
 * The BAT reaches the file at vhdx_flush(), through the log (log.c), after the data it
 * points to is durable.  So a crash before a flush loses only unflushed writes, and a
 * crash at any point leaves a file whose BAT points at data that was really written.
 */
#include "vhdx_int.h"

#define ZERO_CHUNK (256u * KIB)

int write_zeros(struct vhdx_disk *disk, uint64_t offset, uint64_t length)
{
    int rc;

    if (!disk->zero_buffer) {
        disk->zero_buffer = core_alloc(disk, ZERO_CHUNK);
        if (!disk->zero_buffer)
            return disk->diag.code;
    }
    while (length) {
        size_t piece = length < ZERO_CHUNK ? (size_t)length : ZERO_CHUNK;

        rc = file_write(disk, offset, disk->zero_buffer, piece);
        if (rc)
            return rc;
        offset += piece;
        length -= piece;
    }
    return VHDX_OK;
}

/*
 * Before the first change a reader of the virtual disk could see, the header gets new
 * FileWriteGuid (if this session has not written yet) and DataWriteGuid (spec 2.2.2.1).
 */
int write_prepare(struct vhdx_disk *disk)
{
    int rc;

    if (!disk->writable)
        return fail(disk, VHDX_E_READ_ONLY, 0, 0, NULL);
    if (disk->write_failed)
        return fail(disk, VHDX_E_FAILED_EARLIER, 0, 0, NULL);
    if (disk->data_guid_changed)
        return VHDX_OK;
    rc = header_update(disk, true, &disk->header.log_guid);
    if (rc)
        disk->write_failed = true;
    return rc;
}

/* Zero the parts of [start, end) that are not known to read as zero already. */
static int zero_unless_known(struct vhdx_disk *disk, uint64_t start, uint64_t end)
{
    if (end > disk->known_zero_from)
        end = disk->known_zero_from > start ? disk->known_zero_from : start;
    return end > start ? write_zeros(disk, start, end - start) : VHDX_OK;
}

/*
 * Give `block` a new home and write `length` bytes of `data` at `in_block` into it.
 * Nothing in the BAT on disk changes here; on failure the in-memory BAT is untouched.
 */
static int allocate_block(struct vhdx_disk *disk, uint64_t block, uint64_t in_block,
                          const uint8_t *data, uint64_t length)
{
    uint64_t index = vhdx_bat_payload_index(block, disk->chunk_ratio);
    uint64_t offset = disk->alloc_end, end = offset + disk->block_size;
    int rc;

    if (end > disk->real_file_size) {
        rc = file_grow(disk, end);
        if (rc)
            return rc;
        /* [known_zero_from, file end) reads as zero; a grow that does not zero-fill
         * leaves nothing known. */
        if (!(disk->platform.flags & VHDX_PLATFORM_GROW_ZEROES))
            disk->known_zero_from = end;
    }
    rc = zero_unless_known(disk, offset, offset + in_block);
    if (!rc)
        rc = file_write(disk, offset + in_block, data, (size_t)length);
    if (!rc)
        rc = zero_unless_known(disk, offset + in_block + length, end);
    if (rc)
        return rc;
    if (disk->known_zero_from < end)
        disk->known_zero_from = end;
    disk->alloc_end = end;
    disk->bat[index] = offset | PAYLOAD_FULLY_PRESENT;
    disk->bat_dirty[(index / (LOG_SECTOR_SIZE / 8)) / 8] |=
        (uint8_t)(1u << ((index / (LOG_SECTOR_SIZE / 8)) % 8));
    disk->data_unflushed = true;
    return VHDX_OK;
}

int vhdx_write(struct vhdx_disk *disk, uint64_t sector, uint64_t count, const void *buffer)
{
    struct block_walk walk;
    struct io_run run = { 0, NULL, 0 };
    /* The run machinery is shared with reads; it never writes through this pointer. */
    uint8_t *in = (uint8_t *)(uintptr_t)buffer;
    int rc;

    rc = check_range(disk, sector, count, buffer);
    if (!rc && count)
        rc = write_prepare(disk);
    if (rc)
        return rc;
    if (!disk->bat_dirty) {
        disk->bat_dirty = core_alloc(disk, (size_t)(disk->bat_sectors + 7) / 8);
        if (!disk->bat_dirty)
            return disk->diag.code;
    }
    for (block_walk_start(disk, &walk, sector, count); block_walk_next(disk, &walk);
         in += walk.length) {
        if ((walk.entry & BAT_STATE_MASK) == PAYLOAD_FULLY_PRESENT) {
            rc = io_run_add(disk, &run, true, (walk.entry & BAT_OFFSET_MASK) + walk.in_block,
                            in, walk.length);
            disk->data_unflushed = true;
        } else {
            rc = allocate_block(disk, walk.block, walk.in_block, in, walk.length);
        }
        if (rc)
            return rc;
    }
    return io_run_finish(disk, &run, true);
}

static bool bat_is_dirty(const struct vhdx_disk *disk)
{
    return disk->bat_dirty && !mem_is_zero(disk->bat_dirty, (size_t)(disk->bat_sectors + 7) / 8);
}

bool vhdx_allocation_pending(const struct vhdx_disk *disk)
{
    return disk->writable && bat_is_dirty(disk);
}

int vhdx_flush(struct vhdx_disk *disk)
{
    int rc = VHDX_OK;

    if (!disk->writable)
        return VHDX_OK;
    if (disk->write_failed)
        return fail(disk, VHDX_E_FAILED_EARLIER, 0, 0, NULL);
    if (bat_is_dirty(disk)) {
        rc = log_commit_bat(disk);
        /* The log entry may be half-applied now: only a reopen (replay) is safe. */
        if (rc)
            disk->write_failed = true;
        return rc;
    }
    if (disk->data_unflushed || disk->inplace_unflushed) {
        rc = file_flush(disk);
        if (!rc) {
            disk->data_unflushed = false;
            disk->inplace_unflushed = false;
        }
    }
    return rc;
}

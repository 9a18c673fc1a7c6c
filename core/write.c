/*
 * write.c - the write path, zeroing, discard and flush (see write.h).
 */
#include "write.h"

#include "disk.h"

static bool writes_refused(const struct vhdx_disk *disk)
{
    return disk->headers.failed || disk->logw.failed;
}

/*
 * Before the first change a reader of the virtual disk could see, the header gets new
 * FileWriteGuid (if this session has not written yet) and DataWriteGuid (spec 2.2.2.1).
 */
static int write_prepare(struct vhdx_disk *disk)
{
    if (!disk->file.writable)
        return fail(disk, VHDX_E_READ_ONLY, 0, 0, NULL);
    if (writes_refused(disk))
        return fail(disk, VHDX_E_FAILED_EARLIER, 0, 0, NULL);
    if (disk->headers.data_guid_renewed)
        return VHDX_OK;
    return header_update(disk, true, &disk->headers.current.log_guid);
}

/* Give `block` a home and write `length` bytes of `data` at `in_block` into it. */
static int allocate_block(struct vhdx_disk *disk, uint64_t block, uint64_t in_block,
                          const uint8_t *data, uint64_t length)
{
    uint64_t offset, block_size = disk->geometry.block_size;
    int rc;

    rc = space_next_block(disk, &offset);
    if (!rc)
        rc = space_zero(disk, offset, offset + in_block);
    if (!rc)
        rc = file_write(disk, offset + in_block, data, (size_t)length);
    if (!rc)
        rc = space_zero(disk, offset + in_block + length, offset + block_size);
    if (!rc)
        rc = bat_set_payload(disk, block, offset | PAYLOAD_FULLY_PRESENT);
    if (rc)
        return rc;
    space_take_block(disk, offset);
    return VHDX_OK;
}

int vhdx_write(struct vhdx_disk *disk, uint64_t sector, uint64_t count, const void *buffer)
{
    const struct geometry *g = &disk->geometry;
    uint64_t offset = sector << g->sector_shift, length = count << g->sector_shift;
    const uint8_t *in = buffer;
    int rc;

    rc = resolve_check(disk, sector, count, buffer);
    if (!rc && count)
        rc = write_prepare(disk);
    while (!rc && length) {
        struct resolved r;

        rc = resolve(disk, offset, length, &r);
        for (uint32_t i = 0; i < r.count && !rc; i++) {
            const struct run *run = &r.runs[i];
            const uint8_t *from = in + (run->offset - offset);

            if (run->kind == RUN_DATA) {
                rc = file_write(disk, run->file_offset, from, (size_t)run->length);
                continue;
            }
            /* No storage yet: one new block per block the run touches. */
            for (uint64_t done = 0; done < run->length && !rc;) {
                uint64_t at = run->offset + done, in_block = at & (g->block_size - 1);
                uint64_t piece = min_u64(g->block_size - in_block, run->length - done);

                rc = allocate_block(disk, at >> g->block_shift, in_block, from + done, piece);
                done += piece;
            }
        }
        in += r.length;
        offset += r.length;
        length -= r.length;
    }
    return rc;
}

/* The BAT no longer points at these old homes once committed: free their storage. */
static int discard_pending(struct vhdx_disk *disk)
{
    struct write_state *w = &disk->write;
    int rc = VHDX_OK;

    for (uint32_t i = 0; i < w->discard_count && !rc; i++)
        rc = file_discard(disk, w->discards[i], disk->geometry.block_size);
    w->discard_count = 0;
    return rc;
}

/* A whole stored block of a dynamic disk becomes `state`; its old home is freed later. */
static int unmap_block(struct vhdx_disk *disk, uint64_t block, uint64_t old_home,
                       unsigned state)
{
    struct write_state *w = &disk->write;
    int rc;

    if (w->discard_count == WRITE_PENDING_DISCARDS) {
        rc = vhdx_flush(disk);
        if (rc)
            return rc;
    }
    rc = bat_set_payload(disk, block, state);
    if (rc)
        return rc;
    if (disk->file.platform.discard)
        w->discards[w->discard_count++] = old_home;
    return VHDX_OK;
}

/*
 * Zeros over [offset, offset + length): whole blocks of a dynamic disk become `state`,
 * stored parts of other blocks get zeros when `write_zeros` (else they stay: discard).
 * Ranges without storage read as zeros already.
 */
static int clear_range(struct vhdx_disk *disk, uint64_t sector, uint64_t count,
                       unsigned state, bool write_zeros)
{
    const struct geometry *g = &disk->geometry;
    uint64_t offset = sector << g->sector_shift, length = count << g->sector_shift;
    int rc;

    rc = resolve_check(disk, sector, count, disk);
    if (!rc && count)
        rc = write_prepare(disk);
    while (!rc && length) {
        struct resolved r;

        rc = resolve(disk, offset, length, &r);
        for (uint32_t i = 0; i < r.count && !rc; i++) {
            const struct run *run = &r.runs[i];

            if (run->kind != RUN_DATA)
                continue;
            for (uint64_t done = 0; done < run->length && !rc;) {
                uint64_t at = run->offset + done, in_block = at & (g->block_size - 1);
                uint64_t piece = min_u64(g->block_size - in_block, run->length - done);
                uint64_t home = run->file_offset + done - in_block;

                /* A fixed file's blocks must stay present (spec 2.5.1.1 notes <6>-<9>). */
                if (piece == g->block_size && !g->fixed)
                    rc = unmap_block(disk, at >> g->block_shift, home, state);
                else if (write_zeros)
                    rc = file_zero(disk, run->file_offset + done, piece);
                done += piece;
            }
        }
        offset += r.length;
        length -= r.length;
    }
    return rc;
}

int vhdx_write_zeroes(struct vhdx_disk *disk, uint64_t sector, uint64_t count)
{
    return clear_range(disk, sector, count, PAYLOAD_ZERO, true);
}

int vhdx_discard(struct vhdx_disk *disk, uint64_t sector, uint64_t count)
{
    return clear_range(disk, sector, count, PAYLOAD_UNMAPPED, false);
}

bool vhdx_allocation_pending(const struct vhdx_disk *disk)
{
    return disk->file.writable && cache_is_dirty(disk);
}

int vhdx_flush(struct vhdx_disk *disk)
{
    int rc;

    if (!disk->file.writable)
        return VHDX_OK;
    if (writes_refused(disk))
        return fail(disk, VHDX_E_FAILED_EARLIER, 0, 0, NULL);
    if (cache_is_dirty(disk)) {
        /* The log entry is durable when this returns; its in-place writes become
         * durable with the next flush, or at close. */
        rc = cache_commit(disk);
        return rc ? rc : discard_pending(disk);
    }
    /* Discards queued before a commit the cache made by itself (it was full). */
    rc = discard_pending(disk);
    if (!rc && disk->file.unflushed)
        rc = file_flush(disk);
    return rc;
}

int vhdx_reserve(struct vhdx_disk *disk, uint64_t bytes)
{
    if (!disk->file.writable)
        return fail(disk, VHDX_E_READ_ONLY, 0, 0, NULL);
    if (writes_refused(disk))
        return fail(disk, VHDX_E_FAILED_EARLIER, 0, 0, NULL);
    return space_reserve(disk, bytes);
}

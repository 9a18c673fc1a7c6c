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

/*
 * Give `block` a home and write `length` bytes of `data` at `in_block` into it, zeros
 * around them: the block becomes FULLY_PRESENT.  The space is taken only once the BAT
 * points at it, so a failure leaves nothing half-done.
 */
static int allocate_block(struct vhdx_disk *disk, uint64_t block, uint64_t in_block,
                          const uint8_t *data, uint64_t length)
{
    uint64_t offset, block_size = disk->geometry.block_size;
    int rc;

    rc = space_next(disk, block_size, &offset);
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
    space_take(disk, offset, block_size);
    return VHDX_OK;
}

/* The chunk's sector-bitmap block, allocated (zeros: every sector from the parent). */
static int ensure_bitmap(struct vhdx_disk *disk, uint64_t chunk)
{
    uint64_t entry, offset;
    int rc = bat_get_bitmap(disk, chunk, &entry);

    if (rc || (entry & BAT_STATE_MASK) == SB_PRESENT)
        return rc;
    rc = space_next(disk, SECTOR_BITMAP_SIZE, &offset);
    if (!rc)
        rc = space_zero(disk, offset, offset + SECTOR_BITMAP_SIZE);
    if (!rc)
        rc = bat_set_bitmap(disk, chunk, offset | SB_PRESENT);
    if (rc)
        return rc;
    space_take(disk, offset, SECTOR_BITMAP_SIZE);
    return VHDX_OK;
}

/*
 * A differencing disk's block that comes from the parent, written in part: it gets a
 * home, becomes PARTIALLY_PRESENT, and the bitmap marks the sectors written (spec
 * 2.5.1.1).  The rest of the block is never read (its bits stay 0), so it is not zeroed.
 */
static int allocate_partial(struct vhdx_disk *disk, uint64_t block, uint64_t in_block,
                            const uint8_t *data, uint64_t length)
{
    const struct geometry *g = &disk->geometry;
    uint64_t offset;
    int rc;

    rc = ensure_bitmap(disk, block / disk->bat.chunk_ratio);
    if (!rc)
        rc = space_next(disk, g->block_size, &offset);
    if (!rc)
        rc = file_write(disk, offset + in_block, data, (size_t)length);
    if (!rc)
        rc = bat_set_payload(disk, block, offset | PAYLOAD_PARTIALLY_PRESENT);
    if (rc)
        return rc;
    space_take(disk, offset, g->block_size);
    return bitmap_set(disk, ((block << g->block_shift) + in_block) >> g->sector_shift,
                      length >> g->sector_shift);
}

/* Write one run of resolve.c, block by block where blocks need storage or bits. */
static int write_run(struct vhdx_disk *disk, const struct run *run, const uint8_t *from)
{
    const struct geometry *g = &disk->geometry;
    int rc = VHDX_OK;

    if (run->kind == RUN_DATA)
        return file_write(disk, run->file_offset, from, (size_t)run->length);
    for (uint64_t done = 0; done < run->length && !rc;) {
        uint64_t at = run->offset + done, in_block = at & (g->block_size - 1);
        uint64_t piece = min_u64(g->block_size - in_block, run->length - done);
        uint64_t block = at >> g->block_shift;

        if (run->kind == RUN_PARENT && run->file_offset) {
            /* PARTIALLY_PRESENT: the sectors have a home; now they are this file's. */
            rc = file_write(disk, run->file_offset + done, from + done, (size_t)piece);
            if (!rc)
                rc = bitmap_set(disk, at >> g->sector_shift, piece >> g->sector_shift);
        } else if (run->kind == RUN_PARENT && piece < g->block_size) {
            rc = allocate_partial(disk, block, in_block, from + done, piece);
        } else {
            rc = allocate_block(disk, block, in_block, from + done, piece);
        }
        done += piece;
    }
    return rc;
}

static int write_range(struct vhdx_disk *disk, uint64_t offset, uint64_t length,
                       const uint8_t *in)
{
    int rc = VHDX_OK;

    while (!rc && length) {
        struct resolved r;

        rc = resolve(disk, offset, length, &r);
        for (uint32_t i = 0; i < r.count && !rc; i++)
            rc = write_run(disk, &r.runs[i], in + (r.runs[i].offset - offset));
        in += r.length;
        offset += r.length;
        length -= r.length;
    }
    return rc;
}

int vhdx_write(struct vhdx_disk *disk, uint64_t sector, uint64_t count, const void *buffer)
{
    unsigned shift = disk->geometry.sector_shift;
    int rc;

    rc = resolve_check(disk, sector, count, buffer);
    if (!rc && count)
        rc = write_prepare(disk);
    return rc ? rc : write_range(disk, sector << shift, count << shift, buffer);
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

/* Zeros written through the write path (parts of blocks that come from the parent). */
static int write_zero_piece(struct vhdx_disk *disk, uint64_t offset, uint64_t length)
{
    struct write_state *w = &disk->write;
    int rc = VHDX_OK;

    if (!w->zeros) {
        w->zeros = core_alloc(disk, WRITE_ZERO_CHUNK);
        if (!w->zeros)
            return disk->report.diag.code;
    }
    while (!rc && length) {
        uint64_t piece = min_u64(length, WRITE_ZERO_CHUNK);

        rc = write_range(disk, offset, piece, w->zeros);
        offset += piece;
        length -= piece;
    }
    return rc;
}

/* A whole block becomes `state`; its old home (0: none) is freed once committed. */
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
    if (old_home && disk->file.platform.discard)
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

            /* Zeros read as zeros already; what comes from the parent must be zeroed
             * by a write of zeros, and may stay for a discard. */
            if (run->kind == RUN_ZERO || (run->kind == RUN_PARENT && !write_zeros))
                continue;
            for (uint64_t done = 0; done < run->length && !rc;) {
                uint64_t at = run->offset + done, in_block = at & (g->block_size - 1);
                uint64_t piece = min_u64(g->block_size - in_block, run->length - done);
                uint64_t home = run->file_offset ? run->file_offset + done - in_block : 0;

                /* A fixed file's blocks must stay present (spec 2.5.1.1 notes <6>-<9>). */
                if (piece == g->block_size && !g->fixed)
                    rc = unmap_block(disk, at >> g->block_shift, home, state);
                else if (run->kind == RUN_DATA && write_zeros)
                    rc = file_zero(disk, run->file_offset + done, piece);
                else if (write_zeros)
                    rc = write_zero_piece(disk, at, piece);
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

void write_release(struct vhdx_disk *disk)
{
    core_free(disk, disk->write.zeros);
    disk->write.zeros = NULL;
}

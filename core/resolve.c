/*
 * resolve.c - virtual ranges to runs (see resolve.h).
 *
 * Only FULLY_PRESENT blocks are read from the file.  Every other state of a
 * non-differencing file reads as zeros: NOT_PRESENT, UNDEFINED and UNMAPPED may legally
 * return stale data, but we never expose it (spec 2.5.1.1 footnotes 10/11).
 */
#include "resolve.h"

#include "disk.h"

int resolve_check(struct vhdx_disk *disk, uint64_t sector, uint64_t count, const void *buffer)
{
    const struct geometry *g = &disk->geometry;
    uint64_t total = g->virtual_size >> g->sector_shift, end;

    if (count && !buffer)
        return fail(disk, VHDX_E_ARGUMENT, 0, 0, "no buffer");
    if (add_overflows(sector, count, &end) || end > total ||
        count > (SIZE_MAX >> g->sector_shift))
        return fail(disk, VHDX_E_RANGE, sector, end - 1, NULL);
    if (g->has_parent && !disk->chain.parent)
        return fail(disk, VHDX_E_NO_PARENT, 0, 0, "it was opened alone");
    return VHDX_OK;
}

/* Add a piece, extending the last run when it continues it. */
static bool add_piece(struct resolved *out, enum run_kind kind, uint64_t offset,
                      uint64_t length, uint64_t file_offset)
{
    struct run *last = out->count ? &out->runs[out->count - 1] : NULL;

    /* Zeros always continue zeros; stored runs continue where the file does. */
    if (last && last->kind == kind &&
        (kind == RUN_ZERO ? true
         : last->file_offset == 0 ? file_offset == 0
                                  : last->file_offset + last->length == file_offset)) {
        last->length += length;
        out->length += length;
        return true;
    }
    if (out->count == RESOLVE_MAX_RUNS)
        return false;
    out->runs[out->count++] = (struct run){ kind, offset, length, file_offset };
    out->length += length;
    return true;
}

/*
 * A PARTIALLY_PRESENT piece: sectors whose bit is set are in this file at `home` on;
 * the others come from the parent.  *done is how much was added (the runs may fill up).
 */
static int add_bitmap_runs(struct vhdx_disk *disk, struct resolved *out, uint64_t offset,
                           uint64_t length, uint64_t home, uint64_t *done)
{
    unsigned shift = disk->geometry.sector_shift;
    uint64_t at = 0;

    while (at < length) {
        uint64_t run;
        bool present;
        int rc = bitmap_run(disk, (offset + at) >> shift, (length - at) >> shift, &run,
                            &present);

        if (rc)
            return rc;
        run <<= shift;
        if (!add_piece(out, present ? RUN_DATA : RUN_PARENT, offset + at, run, home + at))
            break;
        at += run;
    }
    *done = at;
    return VHDX_OK;
}

int resolve(struct vhdx_disk *disk, uint64_t offset, uint64_t length, struct resolved *out)
{
    const struct geometry *g = &disk->geometry;
    uint64_t end = offset + length;
    int rc;

    out->count = 0;
    out->length = 0;
    while (offset < end) {
        uint64_t block = offset >> g->block_shift, in_block = offset & (g->block_size - 1);
        uint64_t piece = min_u64(g->block_size - in_block, end - offset), entry;
        unsigned state;
        bool added;

        rc = bat_get_payload(disk, block, &entry);
        if (rc)
            return rc;
        state = (unsigned)(entry & BAT_STATE_MASK);
        if (state == PAYLOAD_PARTIALLY_PRESENT && g->has_parent) {
            rc = add_bitmap_runs(disk, out, offset, piece, (entry & BAT_OFFSET_MASK) + in_block,
                                 &piece);
            if (rc)
                return rc;
            added = piece != 0;
        } else if (state == PAYLOAD_FULLY_PRESENT) {
            added = add_piece(out, RUN_DATA, offset, piece,
                              (entry & BAT_OFFSET_MASK) + in_block);
        } else if (state == PAYLOAD_NOT_PRESENT && g->has_parent) {
            /* Spec 2.5.1.1: only NOT_PRESENT reads from the parent; ZERO, UNDEFINED
             * and UNMAPPED read as zeros in a differencing disk too (trap T20). */
            added = add_piece(out, RUN_PARENT, offset, piece, 0);
        } else {
            added = add_piece(out, RUN_ZERO, offset, piece, 0);
        }
        if (!added)
            break;
        offset += piece;
    }
    return VHDX_OK;
}

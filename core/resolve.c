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
    if (g->has_parent)
        return fail(disk, VHDX_E_DIFFERENCING, 0, 0, "reading needs the parent");
    return VHDX_OK;
}

/* Add a piece, extending the last run when it continues it. */
static bool add_piece(struct resolved *out, enum run_kind kind, uint64_t offset,
                      uint64_t length, uint64_t file_offset)
{
    struct run *last = out->count ? &out->runs[out->count - 1] : NULL;

    if (last && last->kind == kind &&
        (kind != RUN_DATA || last->file_offset + last->length == file_offset)) {
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
        if (state == PAYLOAD_FULLY_PRESENT)
            added = add_piece(out, RUN_DATA, offset, piece,
                              (entry & BAT_OFFSET_MASK) + in_block);
        else
            added = add_piece(out, RUN_ZERO, offset, piece, 0);
        if (!added)
            break;
        offset += piece;
    }
    return VHDX_OK;
}

/*
 * merge.c - committing a differencing child into its parent (vhdx_merge in vhdx.h).
 *
 * The order makes every moment safe (spec 2.6.2.6.3 and its note <12> on
 * parent_linkage2): a crash leaves a chain that still opens and reads as the child did.
 *   1. the child's parent_linkage2 names G, the parent's next DataWriteGuid (metadata,
 *      so through the child's log): the child now accepts the parent before and after;
 *   2. the parent's headers take G (its data is about to change);
 *   3. every sector the child holds, and every zeroed block, is written into the parent
 *      through the parent's own write path (its log, its allocations), then flushed.
 * While 3 runs the parent mixes old and new data, but only where the child covers it.
 */
#include "disk.h"

/* A copy buffer: the child's data goes to the parent 1 MiB at a time. */
#define MERGE_CHUNK MIB

/* Copy `length` bytes of the child's file at `home` to the parent's virtual `offset`. */
static int copy_range(struct vhdx_disk *child, struct vhdx_disk *parent, uint64_t home,
                      uint64_t offset, uint64_t length, uint8_t *buffer)
{
    unsigned shift = parent->geometry.sector_shift;
    int rc = VHDX_OK;

    while (!rc && length) {
        uint64_t piece = min_u64(length, MERGE_CHUNK);

        rc = file_read(child, home, buffer, (size_t)piece);
        if (!rc) {
            rc = vhdx_write(parent, offset >> shift, piece >> shift, buffer);
            /* The child reports: its diagnosis is the one the caller reads. */
            if (rc)
                mem_copy(&child->report.diag, &parent->report.diag, sizeof child->report.diag);
        }
        home += piece;
        offset += piece;
        length -= piece;
    }
    return rc;
}

/* One block of the child into the parent, as the child reads it. */
static int merge_block(struct vhdx_disk *child, struct vhdx_disk *parent, uint64_t block,
                       uint8_t *buffer)
{
    const struct geometry *g = &child->geometry;
    uint64_t start = block << g->block_shift, entry, home;
    uint64_t length = min_u64(g->block_size, g->virtual_size - start);
    unsigned state;
    int rc = bat_get_payload(child, block, &entry);

    if (rc)
        return rc;
    state = (unsigned)(entry & BAT_STATE_MASK);
    home = entry & BAT_OFFSET_MASK;
    if (state == PAYLOAD_NOT_PRESENT)
        return VHDX_OK;                 /* the parent's own data: nothing to do */
    if (state == PAYLOAD_FULLY_PRESENT)
        return copy_range(child, parent, home, start, length, buffer);
    if (state != PAYLOAD_PARTIALLY_PRESENT) {
        /* ZERO, UNDEFINED, UNMAPPED: the child reads zeros over the parent's data. */
        rc = vhdx_write_zeroes(parent, start >> g->sector_shift, length >> g->sector_shift);
        if (rc)
            mem_copy(&child->report.diag, &parent->report.diag, sizeof child->report.diag);
        return rc;
    }
    for (uint64_t done = 0; done < length && !rc;) {
        uint64_t run;
        bool present;

        rc = bitmap_run(child, (start + done) >> g->sector_shift,
                        (length - done) >> g->sector_shift, &run, &present);
        run <<= g->sector_shift;
        if (!rc && present)
            rc = copy_range(child, parent, home + done, start + done, run, buffer);
        done += run;
    }
    return rc;
}

int vhdx_merge(struct vhdx_disk *child,
               void (*progress)(void *context, uint64_t done, uint64_t total),
               void *context)
{
    struct vhdx_disk *parent = child->chain.parent;
    uint64_t blocks = child->bat.payload_blocks;
    struct vhdx_guid next;
    char text[39];
    uint8_t *buffer;
    int rc;

    if (!parent)
        return fail(child, VHDX_E_ARGUMENT, 0, 0, "not a differencing disk open with its parent");
    if (!child->file.writable || !parent->file.writable)
        return fail(child, VHDX_E_READ_ONLY, 0, 0, NULL);
    if (child->headers.failed || child->logw.failed || parent->headers.failed ||
        parent->logw.failed)
        return fail(child, VHDX_E_FAILED_EARLIER, 0, 0, NULL);
    buffer = core_alloc(child, MERGE_CHUNK);
    if (!buffer)
        return child->report.diag.code;
    /* 1. The child names the parent's next DataWriteGuid as its second linkage. */
    rc = file_random_guid(parent, &next);
    vhdx_guid_format(&next, text);
    if (!rc && !child->headers.data_guid_renewed)
        rc = header_update(child, true, &child->headers.current.log_guid);
    if (!rc)
        rc = metadata_set_locator(child, "parent_linkage2", text);
    if (!rc)
        rc = vhdx_flush(child);
    /* 2. The parent takes it before its data changes. */
    if (!rc) {
        rc = header_set_data_guid(parent, &next);
        if (rc)
            mem_copy(&child->report.diag, &parent->report.diag, sizeof child->report.diag);
    }
    /* 3. The child's blocks into the parent. */
    for (uint64_t block = 0; !rc && block < blocks; block++) {
        rc = merge_block(child, parent, block, buffer);
        if (!rc && progress)
            progress(context, block + 1, blocks);
    }
    if (!rc) {
        rc = vhdx_flush(parent);
        if (rc)
            mem_copy(&child->report.diag, &parent->report.diag, sizeof child->report.diag);
    }
    if (!rc)
        child->chain.linkage2 = true;
    core_free(child, buffer);
    return rc;
}

/*
 * replay.c - replaying a dirty log (see replay.h; spec 2.3.3, digest 6.10).
 */
#include "replay.h"

#include "disk.h"

/* The largest size a log may ask the file to reach before the geometry is known. */
#define ABSURD_FILE_SIZE (2 * MAX_VIRTUAL_SIZE)

/*
 * A descriptor may not touch the header section (headers never go through the log) or
 * the log itself, and must lie inside the file its entry describes: LastFileOffset is
 * a size into which every allocated structure fits (spec 2.3.1.1).
 */
static int check_target(struct vhdx_disk *disk, const struct log_descriptor *d, uint64_t *end)
{
    const struct vhdx_header *h = &disk->headers.current;

    if (add_overflows(d->file_offset, d->length, end) || *end > ABSURD_FILE_SIZE)
        return fail(disk, VHDX_E_LOG_DESCRIPTOR, d->entry_sequence, d->file_offset,
                    "which overflows");
    if (d->file_offset < HEADER_SECTION_SIZE)
        return fail(disk, VHDX_E_LOG_DESCRIPTOR, d->entry_sequence, d->file_offset,
                    "inside the header section");
    if (ranges_overlap(d->file_offset, d->length, h->log_offset, h->log_length))
        return fail(disk, VHDX_E_LOG_DESCRIPTOR, d->entry_sequence, d->file_offset,
                    "inside the log");
    if (*end > d->entry_last_file_offset)
        return fail(disk, VHDX_E_LOG_DESCRIPTOR, d->entry_sequence, d->file_offset,
                    "past the end of the file its entry describes (LastFileOffset)");
    return VHDX_OK;
}

static int add_descriptor(struct vhdx_disk *disk, void *context,
                          const struct log_descriptor *d)
{
    uint64_t *max_end = context, end;
    int rc = check_target(disk, d, &end);

    if (rc)
        return rc;
    *max_end = max_u64(*max_end, end);
    return overlay_add(disk, d);
}

int replay_prepare(struct vhdx_disk *disk)
{
    struct replay *r = &disk->replay;
    const struct vhdx_header *h = &disk->headers.current;
    struct log_sequence active;
    uint64_t max_end = 0;
    int rc;

    mem_zero(r, sizeof *r);
    r->state = VHDX_LOG_WAS_CLEAN;
    if (vhdx_guid_is_zero(&h->log_guid))
        return VHDX_OK;
    rc = logscan_find(disk, &active);
    if (rc)
        return rc;
    /* A truncated file has lost data the log says was durable (spec 2.3.3, trap T10). */
    if (disk->file.real_size < active.flushed_file_offset)
        return fail(disk, VHDX_E_LOG_TRUNCATED, disk->file.real_size,
                    active.flushed_file_offset, NULL);
    if (active.last_file_offset > ABSURD_FILE_SIZE)
        return fail(disk, VHDX_E_LOG_DESCRIPTOR, active.head_sequence,
                    active.last_file_offset, "as the file size to reach, which is absurd");
    rc = logscan_walk(disk, &active, add_descriptor, &max_end);
    if (rc)
        return rc;
    r->file_end = max_u64(disk->file.real_size, max_u64(max_end, active.last_file_offset));
    rc = overlay_install(disk, r->file_end);
    if (rc)
        return rc;
    r->pending = true;
    r->entries = active.entries;
    r->head_sequence = active.head_sequence;
    r->guid = h->log_guid;
    note_text(disk, VHDX_LOG_INFO, "replaying %a log entries (head sequence %b) %s",
              r->entries, r->head_sequence,
              disk->file.writable ? "into the file" : "in memory (read-only)");
    return VHDX_OK;
}

int replay_finish(struct vhdx_disk *disk, uint64_t size_limit)
{
    struct replay *r = &disk->replay;
    struct vhdx_guid clean;
    int rc;

    if (!r->pending)
        return VHDX_OK;
    if (r->file_end > max_u64(disk->file.real_size, size_limit))
        return fail(disk, VHDX_E_LOG_FILE_SIZE, r->file_end, size_limit, NULL);
    r->pending = false;
    if (!disk->file.writable) {
        r->state = VHDX_LOG_REPLAYED_IN_MEMORY;
        return VHDX_OK;
    }
    /* Spec 2.2.2.1: a new FileWriteGuid reaches the disk before the log is replayed.
     * DataWriteGuid stays: replay restores what the disk held (a child's linkage). */
    rc = header_update(disk, false, &disk->headers.current.log_guid);
    if (!rc)
        rc = overlay_apply(disk);
    if (!rc)
        rc = file_grow(disk, r->file_end);
    if (!rc)
        rc = file_flush(disk);
    mem_zero(&clean, sizeof clean);
    if (!rc)
        rc = header_update(disk, false, &clean);
    if (rc)
        return rc;
    overlay_release(disk);
    r->state = VHDX_LOG_REPLAYED;
    return VHDX_OK;
}

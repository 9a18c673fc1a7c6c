/*
 * logwrite.c - writing metadata pages through the log (see logwrite.h).
 *
 * One deliberate order: the first entry of a session is written and flushed before the
 * header names its LogGuid.  The spec asks for the new LogGuid before log space is
 * overwritten, but a header naming a LogGuid that no entry carries makes the file
 * unopenable (no valid sequence) if power fails in between; with the header still
 * saying "empty" at that moment, a partly written entry is simply ignored.
 */
#include "logwrite.h"

#include "disk.h"

/* Entry header, descriptor and data sector layout (spec 2.3.1). */
#define LE_CHECKSUM          4
#define LE_ENTRY_LENGTH      8
#define LE_TAIL              12
#define LE_SEQUENCE          16
#define LE_DESCRIPTOR_COUNT  24
#define LE_LOG_GUID          32
#define LE_FLUSHED_OFFSET    48
#define LE_LAST_OFFSET       56
#define DESCRIPTOR_SIZE      32
#define D_TRAILING_BYTES     4
#define D_LEADING_BYTES      8
#define D_FILE_OFFSET        16
#define D_SEQUENCE           24
#define DS_SEQUENCE_HIGH     4
#define DS_SEQUENCE_LOW      4092
#define DESCRIPTORS_PER_SECTOR (LOG_SECTOR_SIZE / DESCRIPTOR_SIZE)

static uint32_t descriptor_sectors(uint32_t descriptors)
{
    /* The 64-byte entry header takes the room of two descriptors. */
    return (descriptors + 2 + DESCRIPTORS_PER_SECTOR - 1) / DESCRIPTORS_PER_SECTOR;
}

/* How many pages fit in an entry of at most `sectors` log sectors. */
static uint32_t pages_fitting(uint32_t sectors, uint32_t wanted)
{
    uint32_t fit = 0;

    while (fit < wanted && descriptor_sectors(fit + 1) + fit + 1 <= sectors)
        fit++;
    return fit;
}

static int ensure_buffer(struct vhdx_disk *disk, uint32_t pages)
{
    struct log_writer *w = &disk->logw;

    if (w->buffer && w->buffer_pages >= pages)
        return VHDX_OK;
    core_free(disk, w->buffer);
    w->buffer = core_alloc(disk, (size_t)(descriptor_sectors(pages) + pages) * LOG_SECTOR_SIZE);
    w->buffer_pages = w->buffer ? pages : 0;
    return w->buffer ? VHDX_OK : disk->report.diag.code;
}

/* Copy `length` bytes into the log at `position`, wrapping around its end. */
static int write_wrapped(struct vhdx_disk *disk, uint32_t position, const uint8_t *data,
                         uint32_t length)
{
    const struct vhdx_header *h = &disk->headers.current;
    uint32_t first = (uint32_t)min_u64(h->log_length - position, length);
    int rc;

    rc = file_write(disk, h->log_offset + position, data, first);
    if (!rc && first < length)
        rc = file_write(disk, h->log_offset, data + first, length - first);
    return rc;
}

/* Build the entry for `count` pages at `position` in the buffer; return its length. */
static uint32_t build_entry(struct vhdx_disk *disk, uint32_t position,
                            const struct log_page *pages, uint32_t count)
{
    struct log_writer *w = &disk->logw;
    uint8_t *entry = w->buffer;
    uint32_t desc_sectors = descriptor_sectors(count);
    uint32_t length = (desc_sectors + count) * LOG_SECTOR_SIZE;
    uint64_t sequence = w->next_sequence;

    mem_zero(entry, length);
    mem_copy(entry, "loge", 4);
    put_le32(entry + LE_ENTRY_LENGTH, length);
    put_le32(entry + LE_TAIL, position);        /* everything older is applied and flushed */
    put_le64(entry + LE_SEQUENCE, sequence);
    put_le32(entry + LE_DESCRIPTOR_COUNT, count);
    mem_copy(entry + LE_LOG_GUID, w->guid.bytes, 16);
    /* The current size is durable (we just flushed); the file must reach the end of
     * everything allocated. */
    put_le64(entry + LE_FLUSHED_OFFSET, disk->file.real_size & ~(uint64_t)(MIB - 1));
    put_le64(entry + LE_LAST_OFFSET, disk->space.end);
    for (uint32_t k = 0; k < count; k++) {
        uint8_t *d = entry + (k + 2) * DESCRIPTOR_SIZE;
        uint8_t *data = entry + (size_t)(desc_sectors + k) * LOG_SECTOR_SIZE;

        /* The page exactly as it will stand in the file; its first 8 and last 4 bytes
         * travel in the descriptor (spec 2.3.1.4). */
        mem_copy(data, pages[k].data, LOG_SECTOR_SIZE);
        mem_copy(d, "desc", 4);
        mem_copy(d + D_TRAILING_BYTES, data + DS_SEQUENCE_LOW, 4);
        mem_copy(d + D_LEADING_BYTES, data, 8);
        put_le64(d + D_FILE_OFFSET, pages[k].offset);
        put_le64(d + D_SEQUENCE, sequence);
        mem_copy(data, "data", 4);
        put_le32(data + DS_SEQUENCE_HIGH, (uint32_t)(sequence >> 32));
        put_le32(data + DS_SEQUENCE_LOW, (uint32_t)sequence);
    }
    put_le32(entry + LE_CHECKSUM, vhdx_crc32c(0, entry, length));
    return length;
}

/*
 * Mark the log empty (every entry is applied and flushed by now) so the next entry may
 * use all of it.  Needed only when the last entry leaves too little room for the next.
 */
static int log_reset(struct vhdx_disk *disk)
{
    struct log_writer *w = &disk->logw;
    struct vhdx_guid clean;
    int rc;

    mem_zero(&clean, sizeof clean);
    if (w->active) {
        rc = header_update(disk, false, &clean);
        if (rc)
            return rc;
        w->active = false;
    }
    w->head_position = 0;
    w->head_length = 0;
    return file_random_guid(disk, &w->guid);
}

static int commit(struct vhdx_disk *disk, const struct log_page *pages, uint32_t count)
{
    struct log_writer *w = &disk->logw;
    uint32_t log_length = disk->headers.current.log_length, next = 0;
    int rc;

    if (log_length < 2 * LOG_SECTOR_SIZE)
        return fail(disk, VHDX_E_LOG_FULL, log_length, 2 * LOG_SECTOR_SIZE, NULL);
    rc = ensure_buffer(disk, (uint32_t)min_u64(count, LOG_ENTRY_MAX_PAGES));
    if (rc)
        return rc;
    if (!w->active && vhdx_guid_is_zero(&w->guid)) {
        rc = file_random_guid(disk, &w->guid);
        if (rc)
            return rc;
        w->next_sequence = disk->replay.head_sequence + 1;
    }
    while (next < count) {
        uint32_t position = (w->head_position + w->head_length) % log_length;
        uint32_t room = (log_length - w->head_length) / LOG_SECTOR_SIZE;
        uint32_t fit = pages_fitting(room, (uint32_t)min_u64(count - next, w->buffer_pages));
        uint32_t length;

        /* Payload data, and the last entry's in-place writes, become durable first:
         * before an entry may point at the data, and before the log may be reset. */
        rc = file_flush(disk);
        if (rc)
            return rc;
        if (fit == 0) {
            if (w->head_length == 0)
                return fail(disk, VHDX_E_LOG_FULL, log_length, 2 * LOG_SECTOR_SIZE, NULL);
            rc = log_reset(disk);
            if (rc)
                return rc;
            continue;
        }
        length = build_entry(disk, position, pages + next, fit);
        rc = write_wrapped(disk, position, w->buffer, length);
        if (!rc)
            rc = file_flush(disk);
        if (rc)
            return rc;
        /* Publish the session's LogGuid only once the log holds an entry carrying it. */
        if (!w->active) {
            rc = header_update(disk, false, &w->guid);
            if (rc)
                return rc;
            w->active = true;
        }
        for (uint32_t k = 0; k < fit; k++) {
            rc = file_write(disk, pages[next + k].offset, pages[next + k].data, PAGE_SIZE);
            if (rc)
                return rc;
        }
        w->head_position = position;
        w->head_length = length;
        w->next_sequence++;
        next += fit;
    }
    return VHDX_OK;
}

int logw_commit(struct vhdx_disk *disk, const struct log_page *pages, uint32_t count)
{
    int rc;

    if (disk->logw.failed)
        return fail(disk, VHDX_E_FAILED_EARLIER, 0, 0, NULL);
    rc = commit(disk, pages, count);
    /* An entry may be half-applied now: only a reopen (replay) is safe. */
    if (rc)
        disk->logw.failed = true;
    return rc;
}

int logw_close(struct vhdx_disk *disk)
{
    struct log_writer *w = &disk->logw;
    struct vhdx_guid clean;
    int rc;

    if (disk->file.unflushed) {
        rc = file_flush(disk);
        if (rc)
            return rc;
    }
    if (!w->active)
        return VHDX_OK;
    mem_zero(&clean, sizeof clean);
    rc = header_update(disk, false, &clean);
    if (!rc)
        w->active = false;
    return rc;
}

void logw_release(struct vhdx_disk *disk)
{
    core_free(disk, disk->logw.buffer);
    disk->logw.buffer = NULL;
    disk->logw.buffer_pages = 0;
}

/*
 * header.c - the file type identifier and the two headers (spec 2.2.1, 2.2.2).
 *
 * A header is valid when its signature is "head" and its CRC-32C over the whole 4 KiB
 * structure checks.  The current header is the valid one with the greater sequence
 * number; one valid header is enough.  Disk2VHD writes two identical headers with the
 * same sequence number: the spec has no current header then, but identical copies
 * cannot disagree, so we accept them and use header 1 (as QEMU and 7-Zip do).
 */
#include "header.h"

#include "disk.h"

/* Field offsets in the 4 KiB header structure. */
#define H_SIGNATURE       0
#define H_CHECKSUM        4
#define H_SEQUENCE        8
#define H_FILE_WRITE_GUID 16
#define H_DATA_WRITE_GUID 32
#define H_LOG_GUID        48
#define H_LOG_VERSION     64
#define H_VERSION         66
#define H_LOG_LENGTH      68
#define H_LOG_OFFSET      72
#define H_DEFINED_BYTES   80

enum header_status {
    HEADER_VALID,
    HEADER_BAD_SIGNATURE,
    HEADER_BAD_CHECKSUM
};

static const char *const header_status_text[] = {
    [HEADER_VALID] = "valid",
    [HEADER_BAD_SIGNATURE] = "has no 'head' signature",
    [HEADER_BAD_CHECKSUM] = "has a bad checksum",
};

/* Both headers invalid: the %s of VHDX_E_NO_VALID_HEADER, one text per combination. */
static const char *const both_invalid_text[3][3] = {
    [HEADER_BAD_SIGNATURE][HEADER_BAD_SIGNATURE] = "no signature; header 2: no signature",
    [HEADER_BAD_SIGNATURE][HEADER_BAD_CHECKSUM] = "no signature; header 2: bad checksum",
    [HEADER_BAD_CHECKSUM][HEADER_BAD_SIGNATURE] = "bad checksum; header 2: no signature",
    [HEADER_BAD_CHECKSUM][HEADER_BAD_CHECKSUM] = "bad checksum; header 2: bad checksum",
};

static enum header_status header_parse(const uint8_t *raw, struct vhdx_header *h)
{
    if (!mem_equal(raw + H_SIGNATURE, "head", 4))
        return HEADER_BAD_SIGNATURE;
    if (get_le32(raw + H_CHECKSUM) != crc_with_zero_field(raw, HEADER_SIZE))
        return HEADER_BAD_CHECKSUM;
    h->sequence = get_le64(raw + H_SEQUENCE);
    guid_read(&h->file_write_guid, raw + H_FILE_WRITE_GUID);
    guid_read(&h->data_write_guid, raw + H_DATA_WRITE_GUID);
    guid_read(&h->log_guid, raw + H_LOG_GUID);
    h->log_version = get_le16(raw + H_LOG_VERSION);
    h->version = get_le16(raw + H_VERSION);
    h->log_length = get_le32(raw + H_LOG_LENGTH);
    h->log_offset = get_le64(raw + H_LOG_OFFSET);
    return HEADER_VALID;
}

static void header_serialize(const struct vhdx_header *h, uint8_t *raw)
{
    mem_zero(raw, HEADER_SIZE);
    mem_copy(raw + H_SIGNATURE, "head", 4);
    put_le64(raw + H_SEQUENCE, h->sequence);
    mem_copy(raw + H_FILE_WRITE_GUID, h->file_write_guid.bytes, 16);
    mem_copy(raw + H_DATA_WRITE_GUID, h->data_write_guid.bytes, 16);
    mem_copy(raw + H_LOG_GUID, h->log_guid.bytes, 16);
    put_le16(raw + H_LOG_VERSION, h->log_version);
    put_le16(raw + H_VERSION, h->version);
    put_le32(raw + H_LOG_LENGTH, h->log_length);
    put_le64(raw + H_LOG_OFFSET, h->log_offset);
    put_le32(raw + H_CHECKSUM, crc_with_zero_field(raw, HEADER_SIZE));
}

/* The file type identifier must say "vhdxfile"; the rest of it is free text. */
static int check_file_identifier(struct vhdx_disk *disk)
{
    uint8_t signature[8];
    int rc;

    if (disk->file.size < sizeof signature)
        return fail(disk, VHDX_E_NOT_VHDX, 0, 0, NULL);
    rc = file_read(disk, FILE_ID_OFFSET, signature, sizeof signature);
    if (rc)
        return rc;
    if (!mem_equal(signature, "vhdxfile", 8))
        return fail(disk, VHDX_E_NOT_VHDX, 0, 0, NULL);
    if (disk->file.size < HEADER_SECTION_SIZE)
        return fail(disk, VHDX_E_FILE_TOO_SMALL, disk->file.size, 0, NULL);
    return VHDX_OK;
}

/* The current header's own fields (spec 2.2.2): version, log placement. */
static int check_current_header(struct vhdx_disk *disk)
{
    const struct vhdx_header *h = &disk->headers.current;
    uint64_t log_end;

    if (h->version != 1)
        return fail(disk, VHDX_E_HEADER_VERSION, h->version, 0, NULL);
    /* A non-zero LogVersion only matters when there is a log to replay (trap T15). */
    if (h->log_version != 0 && !vhdx_guid_is_zero(&h->log_guid))
        return fail(disk, VHDX_E_LOG_VERSION, h->log_version, 0, NULL);
    if (h->log_length % MIB || h->log_offset % MIB ||
        (h->log_length && h->log_offset < HEADER_SECTION_SIZE))
        return problem(disk, true, VHDX_E_LOG_PLACEMENT, h->log_offset, h->log_length, NULL);
    if (add_overflows(h->log_offset, h->log_length, &log_end) || log_end > disk->file.size)
        return problem(disk, true, VHDX_E_LOG_PAST_EOF, h->log_offset, h->log_length, NULL);
    return VHDX_OK;
}

int header_load(struct vhdx_disk *disk)
{
    struct vhdx_header parsed[2];
    enum header_status status[2];
    uint8_t *raw;
    int rc;

    rc = check_file_identifier(disk);
    if (rc)
        return rc;
    raw = core_alloc(disk, 2 * HEADER_SIZE);
    if (!raw)
        return disk->report.diag.code;
    rc = file_read(disk, HEADER_OFFSET_1, raw, HEADER_SIZE);
    if (!rc)
        rc = file_read(disk, HEADER_OFFSET_2, raw + HEADER_SIZE, HEADER_SIZE);
    if (rc)
        goto out;
    status[0] = header_parse(raw, &parsed[0]);
    status[1] = header_parse(raw + HEADER_SIZE, &parsed[1]);

    if (status[0] != HEADER_VALID && status[1] != HEADER_VALID) {
        rc = fail(disk, VHDX_E_NO_VALID_HEADER, 0, 0, both_invalid_text[status[0]][status[1]]);
        goto out;
    }
    if (status[0] == HEADER_VALID && status[1] == HEADER_VALID) {
        if (parsed[0].sequence == parsed[1].sequence) {
            /* Equal sequence numbers: acceptable only when the copies agree. */
            if (!mem_equal(raw + H_SEQUENCE, raw + HEADER_SIZE + H_SEQUENCE,
                           H_DEFINED_BYTES - H_SEQUENCE)) {
                rc = fail(disk, VHDX_E_HEADERS_CONFLICT, parsed[0].sequence, 0, NULL);
                goto out;
            }
            disk->headers.slot = 1;
        } else {
            disk->headers.slot = parsed[0].sequence > parsed[1].sequence ? 1 : 2;
        }
    } else {
        unsigned bad = status[0] == HEADER_VALID ? 2 : 1;

        disk->headers.slot = 3 - bad;
        /* Not a problem even in check mode: a crash between the two writes of a header
         * update (spec 2.2.2.1) leaves exactly this, and the other copy is current. */
        note_text(disk, VHDX_LOG_WARNING,
                  "header %a %s; using header %b (an interrupted header update leaves this)",
                  bad, disk->headers.slot, header_status_text[status[bad - 1]]);
    }
    disk->headers.current = parsed[disk->headers.slot - 1];
    rc = check_current_header(disk);
out:
    core_free(disk, raw);
    return rc;
}

/*
 * The header update of spec 2.2.2.1: a new header with the next sequence number goes to
 * the non-current slot and is flushed before anything else may change.  Done twice so
 * both slots end up current.  The first update of a session renews FileWriteGuid; the
 * first one that precedes a change a reader of the disk could see renews DataWriteGuid.
 */
static int write_headers(struct vhdx_disk *disk, const struct vhdx_guid *data_guid,
                         bool new_data_guid, const struct vhdx_guid *log_guid)
{
    struct vhdx_header next;
    uint8_t *raw = disk->headers.raw;
    int rc = VHDX_OK;

    for (int pass = 0; pass < 2 && !rc; pass++) {
        unsigned slot = disk->headers.slot == 1 ? 2 : 1;

        next = disk->headers.current;
        if (next.sequence == UINT64_MAX) {
            rc = fail(disk, VHDX_E_SEQUENCE_EXHAUSTED, next.sequence, 0, NULL);
            break;
        }
        next.sequence++;
        if (!disk->headers.file_guid_renewed)
            rc = file_random_guid(disk, &next.file_write_guid);
        if (data_guid)
            next.data_write_guid = *data_guid;
        else if (!rc && new_data_guid && !disk->headers.data_guid_renewed)
            rc = file_random_guid(disk, &next.data_write_guid);
        if (rc)
            break;
        next.log_guid = *log_guid;
        next.log_version = 0;
        next.version = 1;
        header_serialize(&next, raw);
        rc = file_write(disk, slot == 1 ? HEADER_OFFSET_1 : HEADER_OFFSET_2, raw, HEADER_SIZE);
        if (!rc)
            rc = file_flush(disk);
        if (rc)
            break;
        disk->headers.current = next;
        disk->headers.slot = slot;
        disk->headers.file_guid_renewed = true;
        if (new_data_guid || data_guid)
            disk->headers.data_guid_renewed = true;
    }
    /* A half-done update leaves the slots disagreeing: only a reopen sorts that out. */
    if (rc)
        disk->headers.failed = true;
    return rc;
}

int header_update(struct vhdx_disk *disk, bool new_data_guid,
                  const struct vhdx_guid *log_guid)
{
    return write_headers(disk, NULL, new_data_guid, log_guid);
}

int header_set_data_guid(struct vhdx_disk *disk, const struct vhdx_guid *data_guid)
{
    struct vhdx_guid log_guid = disk->headers.current.log_guid;

    return write_headers(disk, data_guid, false, &log_guid);
}

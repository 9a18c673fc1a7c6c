/*
 * errors.c - the message table and the reporting helpers.
 *
 * A message template may refer to the details of a diagnosis: %a and %b print them in
 * decimal, %A and %B in hexadecimal, %s prints the text detail.  The platform prefixes
 * the file name, so messages read "disk.vhdx: BAT entry 17 points past end of file".
 */
#include "vhdx_int.h"

static const char *const error_templates[VHDX_ERROR_COUNT] = {
    [VHDX_OK] = "success",

    [VHDX_E_IO] = "I/O error %s at file offset %a",
    [VHDX_E_NOMEM] = "out of memory (needed %a bytes)",
    [VHDX_E_READ_ONLY] = "the image is open read-only",
    [VHDX_E_NO_SPACE] = "no space to grow the file to %a bytes",
    [VHDX_E_RANGE] = "sectors %a..%b are past the end of the virtual disk",
    [VHDX_E_ARGUMENT] = "invalid argument: %s",
    [VHDX_E_DIFFERENCING] = "differencing disks are not supported yet (%s)",
    [VHDX_E_FAILED_EARLIER] = "an earlier write failed; the image is not written any more",

    [VHDX_E_NOT_VHDX] = "not a VHDX file (no 'vhdxfile' signature)",
    [VHDX_E_FILE_TOO_SMALL] = "file is %a bytes, too small for the 1 MiB VHDX header section",
    [VHDX_E_TRUNCATED] = "file ends at %a bytes, before data it needs at offset %b (truncated?)",
    [VHDX_E_NO_VALID_HEADER] = "no valid header (header 1: %s)",
    [VHDX_E_HEADERS_CONFLICT] = "both headers have sequence number %a but different contents",
    [VHDX_E_HEADER_VERSION] = "header version is %a; only version 1 is supported",
    [VHDX_E_LOG_VERSION] = "log version is %a; only version 0 logs can be replayed",
    [VHDX_E_LOG_PLACEMENT] = "log at offset %a length %b is not 1 MiB aligned or lies in the "
                             "header section",
    [VHDX_E_LOG_PAST_EOF] = "log at offset %a length %b extends past the end of the file",
    [VHDX_E_SEQUENCE_EXHAUSTED] = "header sequence number %a cannot be incremented",

    [VHDX_E_NO_VALID_REGION_TABLE] = "no valid region table (copy 1: %s)",
    [VHDX_E_REGION_COUNT] = "region table has %a entries; at most 2047 are allowed",
    [VHDX_E_REGION_RESERVED] = "region table entry %a has reserved bits set (%B)",
    [VHDX_E_REGION_PLACEMENT] = "region %a (offset %b) is not 1 MiB aligned or lies in the "
                                "header section",
    [VHDX_E_REGION_PAST_EOF] = "region %a (offset %b) extends past the end of the file",
    [VHDX_E_REGION_OVERLAP] = "regions %a and %b overlap",
    [VHDX_E_REGION_OVERLAPS_LOG] = "region %a (offset %b) overlaps the log",
    [VHDX_E_REGION_DUPLICATE] = "region %a repeats the type of region %b",
    [VHDX_E_REGION_UNKNOWN_REQUIRED] = "region %a has an unknown type %s and is marked required",
    [VHDX_E_REGION_MISSING] = "region table has no %s region",

    [VHDX_E_META_SIGNATURE] = "metadata table has no 'metadata' signature",
    [VHDX_E_META_COUNT] = "metadata table has %a entries; at most 2047 are allowed",
    [VHDX_E_META_RESERVED] = "metadata table entry %a has reserved bits set (%B)",
    [VHDX_E_META_ITEM_BOUNDS] = "metadata item %a (offset %b) lies outside the metadata "
                                "region's item area",
    [VHDX_E_META_ITEM_OVERLAP] = "metadata items %a and %b overlap",
    [VHDX_E_META_DUPLICATE] = "metadata item %a repeats item %b",
    [VHDX_E_META_UNKNOWN_REQUIRED] = "metadata item %a has an unknown type %s and is marked "
                                     "required",
    [VHDX_E_META_MISSING] = "required metadata item %s is missing",
    [VHDX_E_META_ITEM_SIZE] = "metadata item %s is %a bytes long; %b expected",
    [VHDX_E_BLOCK_SIZE] = "block size %a is not a power of two from 1 MiB to 256 MiB",
    [VHDX_E_SECTOR_SIZE] = "%s sector size %a is neither 512 nor 4096",
    [VHDX_E_VIRTUAL_SIZE] = "virtual disk size %a is zero, over 64 TiB or not a multiple of "
                            "the %b-byte logical sector",
    [VHDX_E_FILE_PARAMETERS] = "file parameters have reserved bits set (%A)",
    [VHDX_E_PARENT_LOCATOR] = "parent locator: %s (entry %a)",

    [VHDX_E_BAT_TOO_SMALL] = "BAT region is %a bytes, too small for %b entries",
    [VHDX_E_BAT_RESERVED] = "BAT entry %a has reserved bits set (%B)",
    [VHDX_E_BAT_STATE] = "BAT entry %a has state %b, %s",
    [VHDX_E_BAT_IN_HEADER] = "BAT entry %a points into the header section",
    [VHDX_E_BAT_PAST_EOF] = "BAT entry %a points past end of file (offset %b)",
    [VHDX_E_BAT_OVERLAP] = "BAT entry %a (offset %b) overlaps %s",
    [VHDX_E_BAT_SHARED] = "BAT entries %a and %b point at overlapping file space",

    [VHDX_E_LOG_NO_SEQUENCE] = "the log is dirty but holds no valid log sequence",
    [VHDX_E_LOG_TRUNCATED] = "file is %a bytes, shorter than the %b bytes the log says were "
                             "flushed (truncated file)",
    [VHDX_E_LOG_DESCRIPTOR] = "log entry %a writes to file offset %b, %s",
    [VHDX_E_LOG_FULL] = "the log (%a bytes) cannot hold an update of %b bytes",

    [VHDX_E_CHECK_FAILED] = "%a problem(s) found",
};

const char *vhdx_error_template(enum vhdx_error code)
{
    if ((unsigned)code >= VHDX_ERROR_COUNT || !error_templates[code])
        return "unknown error";
    return error_templates[code];
}

static size_t put_char(char *out, size_t size, size_t pos, char c)
{
    if (pos + 1 < size)
        out[pos] = c;
    return pos + 1;
}

static size_t put_number(char *out, size_t size, size_t pos, uint64_t v, unsigned base)
{
    char digits[24];
    unsigned n = 0;

    if (base == 16) {
        pos = put_char(out, size, pos, '0');
        pos = put_char(out, size, pos, 'x');
    }
    do {
        digits[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (n)
        pos = put_char(out, size, pos, digits[--n]);
    return pos;
}

size_t format_message(char *out, size_t size, const char *template, uint64_t a,
                      uint64_t b, const char *s)
{
    size_t pos = 0;

    for (const char *t = template; *t; t++) {
        if (*t != '%' || !t[1]) {
            pos = put_char(out, size, pos, *t);
            continue;
        }
        switch (*++t) {
        case 'a': pos = put_number(out, size, pos, a, 10); break;
        case 'b': pos = put_number(out, size, pos, b, 10); break;
        case 'A': pos = put_number(out, size, pos, a, 16); break;
        case 'B': pos = put_number(out, size, pos, b, 16); break;
        case 's':
            for (const char *p = s ? s : "?"; *p; p++)
                pos = put_char(out, size, pos, *p);
            break;
        default:
            pos = put_char(out, size, pos, '%');
            pos = put_char(out, size, pos, *t);
        }
    }
    if (size)
        out[pos < size ? pos : size - 1] = '\0';
    return pos < size ? pos : (size ? size - 1 : 0);
}

size_t vhdx_describe(const struct vhdx_diag *diag, char *buffer, size_t size)
{
    return format_message(buffer, size, vhdx_error_template(diag->code), diag->a, diag->b,
                          diag->s ? diag->s : diag->text);
}

void note_text(struct vhdx_disk *disk, enum vhdx_log_level level, const char *text,
               uint64_t a, uint64_t b, const char *s)
{
    char message[256];

    if (!disk || !disk->platform.log)
        return;
    format_message(message, sizeof message, text, a, b, s);
    disk->platform.log(disk->platform.context, level, message);
}

void note(struct vhdx_disk *disk, enum vhdx_log_level level, enum vhdx_error code,
          uint64_t a, uint64_t b, const char *s)
{
    note_text(disk, level, vhdx_error_template(code), a, b, s);
}

int fail(struct vhdx_disk *disk, enum vhdx_error code, uint64_t a, uint64_t b,
         const char *s)
{
    if (disk) {
        disk->diag.code = code;
        disk->diag.a = a;
        disk->diag.b = b;
        disk->diag.s = s;
        disk->diag.text[0] = '\0';
    }
    return code;
}

int problem_guid(struct vhdx_disk *disk, bool fatal, enum vhdx_error code, uint64_t a,
                 const struct vhdx_guid *guid)
{
    char text[39];

    vhdx_guid_format(guid, text);
    if ((disk->open_flags & VHDX_OPEN_CHECK) && !fatal) {
        disk->problems++;
        note(disk, VHDX_LOG_PROBLEM, code, a, 0, text);
        return VHDX_OK;
    }
    if (disk->open_flags & VHDX_OPEN_CHECK)
        disk->problems++;
    fail(disk, code, a, 0, NULL);
    mem_copy(disk->diag.text, text, sizeof text);
    return code;
}

int problem(struct vhdx_disk *disk, bool fatal, enum vhdx_error code, uint64_t a,
            uint64_t b, const char *s)
{
    if (!(disk->open_flags & VHDX_OPEN_CHECK))
        return fail(disk, code, a, b, s);
    disk->problems++;
    if (fatal)
        return fail(disk, code, a, b, s);
    note(disk, VHDX_LOG_PROBLEM, code, a, b, s);
    return VHDX_OK;
}

void quirk_text(struct vhdx_disk *disk, const char *text, uint64_t a, uint64_t b,
                const char *s)
{
    bool checking = disk->open_flags & VHDX_OPEN_CHECK;

    if (checking)
        disk->problems++;
    note_text(disk, checking ? VHDX_LOG_PROBLEM : VHDX_LOG_WARNING, text, a, b, s);
}

void quirk(struct vhdx_disk *disk, enum vhdx_error code, uint64_t a, uint64_t b,
           const char *s)
{
    quirk_text(disk, vhdx_error_template(code), a, b, s);
}

/*
 * errors.c - the message table (generated from VHDX_ERROR_LIST in vhdx.h) and the
 * reporting helpers (see errors.h).
 */
#include "errors.h"

#include "disk.h"

struct error_entry {
    enum vhdx_error_class class;
    enum vhdx_error_part part;
    const char *text;
};

#define ERROR_ENTRY(name, cls, where, template) \
    [VHDX_E_##name] = { VHDX_CLASS_##cls, VHDX_PART_##where, template },
static const struct error_entry errors[VHDX_ERROR_COUNT] = {
    VHDX_ERROR_LIST(ERROR_ENTRY)
};
#undef ERROR_ENTRY

static const char *const part_names[VHDX_PART_COUNT] = {
    [VHDX_PART_NONE] = "the file",
    [VHDX_PART_HEADER] = "the headers",
    [VHDX_PART_LOG] = "the log",
    [VHDX_PART_REGION] = "the region table",
    [VHDX_PART_METADATA] = "the metadata",
    [VHDX_PART_BAT] = "the BAT",
};

const char *vhdx_error_template(enum vhdx_error code)
{
    if ((unsigned)code >= VHDX_ERROR_COUNT)
        return "unknown error";
    return errors[code].text;
}

enum vhdx_error_class vhdx_error_class(enum vhdx_error code)
{
    return (unsigned)code < VHDX_ERROR_COUNT ? errors[code].class : VHDX_CLASS_ARGUMENT;
}

enum vhdx_error_part vhdx_error_part(enum vhdx_error code)
{
    return (unsigned)code < VHDX_ERROR_COUNT ? errors[code].part : VHDX_PART_NONE;
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

    if (!disk || !disk->file.platform.log)
        return;
    format_message(message, sizeof message, text, a, b, s);
    disk->file.platform.log(disk->file.platform.context, level, message);
}

void note(struct vhdx_disk *disk, enum vhdx_log_level level, enum vhdx_error code,
          uint64_t a, uint64_t b, const char *s)
{
    note_text(disk, level, vhdx_error_template(code), a, b, s);
}

void report_init(struct vhdx_disk *disk, bool checking)
{
    mem_zero(&disk->report, sizeof disk->report);
    disk->report.checking = checking;
}

int fail(struct vhdx_disk *disk, enum vhdx_error code, uint64_t a, uint64_t b,
         const char *s)
{
    struct vhdx_diag *diag = &disk->report.diag;

    diag->code = code;
    diag->a = a;
    diag->b = b;
    diag->s = s;
    diag->text[0] = '\0';
    return code;
}

bool problem_shown(const struct vhdx_disk *disk, enum vhdx_error_part part)
{
    return disk->report.shown[part] < VHDX_PROBLEMS_SHOWN;
}

/* Count a check-mode problem and say whether to print it. */
static bool count_problem(struct vhdx_disk *disk, enum vhdx_error_part part)
{
    bool show = problem_shown(disk, part);

    disk->report.problems++;
    if (show)
        disk->report.shown[part]++;
    else
        disk->report.hidden[part]++;
    return show;
}

static int problem_text(struct vhdx_disk *disk, bool fatal, enum vhdx_error code,
                        uint64_t a, uint64_t b, const char *s)
{
    if (!disk->report.checking)
        return fail(disk, code, a, b, s);
    if (fatal) {
        disk->report.problems++;
        return fail(disk, code, a, b, s);
    }
    if (count_problem(disk, vhdx_error_part(code)))
        note(disk, VHDX_LOG_PROBLEM, code, a, b, s);
    return VHDX_OK;
}

int problem(struct vhdx_disk *disk, bool fatal, enum vhdx_error code, uint64_t a,
            uint64_t b, const char *s)
{
    return problem_text(disk, fatal, code, a, b, s);
}

int problem_guid(struct vhdx_disk *disk, bool fatal, enum vhdx_error code, uint64_t a,
                 const struct vhdx_guid *guid)
{
    char text[39];
    int rc;

    vhdx_guid_format(guid, text);
    rc = problem_text(disk, fatal, code, a, 0, text);
    if (rc) {
        /* The diagnosis outlives this frame: keep the text in it. */
        mem_copy(disk->report.diag.text, text, sizeof text);
        disk->report.diag.s = NULL;
    }
    return rc;
}

void quirk_text(struct vhdx_disk *disk, enum vhdx_error_part part, const char *text,
                uint64_t a, uint64_t b, const char *s)
{
    if (!disk->report.checking) {
        note_text(disk, VHDX_LOG_WARNING, text, a, b, s);
        return;
    }
    if (count_problem(disk, part))
        note_text(disk, VHDX_LOG_PROBLEM, text, a, b, s);
}

void quirk(struct vhdx_disk *disk, enum vhdx_error code, uint64_t a, uint64_t b,
           const char *s)
{
    quirk_text(disk, vhdx_error_part(code), vhdx_error_template(code), a, b, s);
}

void report_hidden_problems(struct vhdx_disk *disk)
{
    for (unsigned part = 0; part < VHDX_PART_COUNT; part++) {
        uint32_t hidden = disk->report.hidden[part];

        if (hidden)
            note_text(disk, VHDX_LOG_PROBLEM, "... and %a more problem(s) with %s", hidden,
                      0, part_names[part]);
    }
}

/*
 * vhdx - the host tool: inspect, read, check, write and repair VHDX files with the
 * same core the UEFI driver uses, on the POSIX platform backend.
 *
 * Exit status: 0 success; 1 the image is invalid (or, for check, has problems);
 * 2 usage or I/O errors.  Errors go to stderr as "vhdx: FILE: reason".
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "posix.h"
#include "vhdx.h"

#define EXIT_INVALID 1
#define EXIT_USAGE 2
#define IO_CHUNK (4u << 20)

static const char usage_text[] =
    "usage: vhdx COMMAND IMAGE [OPTIONS]\n"
    "\n"
    "Commands:\n"
    "  info IMAGE [--json]                  describe the image\n"
    "  cat IMAGE [--offset N] [--length N]  write the virtual disk's bytes to stdout\n"
    "  check IMAGE                          validate the structure: exit 0 clean,\n"
    "                                       1 problems (each listed), 2 errors\n"
    "  write IMAGE --offset N               write stdin into the virtual disk at byte N\n"
    "                                       (offset and length in whole logical sectors)\n"
    "  replay IMAGE                         replay a dirty log into the file\n"
    "\n"
    "Options:\n"
    "  -v, --verbose   also say what opening did (log replay, fallbacks) and what it\n"
    "                  cost (the core's peak allocation, bytes read and written)\n"
    "  -h, --help      this text\n"
    "  --version       the version\n"
    "\n"
    "info, cat and check never write: a dirty log is replayed in memory.\n"
    "Numbers are decimal or 0x hex, with an optional K, M, G or T suffix (x1024).\n";

struct options {
    const char *command;
    const char *image;
    bool json;
    int verbosity;
    bool have_offset, have_length;
    uint64_t offset, length;
};

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "vhdx: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'vhdx --help'.\n");
    return EXIT_USAGE;
}

static bool parse_number(const char *text, uint64_t *value)
{
    char *end;
    unsigned long long v;
    unsigned shift = 0;

    if (!*text || *text == '-')
        return false;
    errno = 0;
    v = strtoull(text, &end, 0);
    if (errno || end == text)
        return false;
    switch (*end) {
    case 'K': case 'k': shift = 10; end++; break;
    case 'M': case 'm': shift = 20; end++; break;
    case 'G': case 'g': shift = 30; end++; break;
    case 'T': case 't': shift = 40; end++; break;
    }
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return false;
    *value = (uint64_t)v << shift;
    return true;
}

/* The tiny strict parser: one command, one image, known options only. */
static int parse_args(int argc, char **argv, struct options *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            exit(0);
        } else if (!strcmp(a, "--version")) {
            printf("vhdx %s\n", VHDX_CORE_VERSION);
            exit(0);
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbosity++;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--offset") || !strcmp(a, "--length")) {
            bool is_offset = a[2] == 'o';

            if (i + 1 >= argc)
                return usage_error("%s needs a number", a);
            if (!parse_number(argv[++i], is_offset ? &o->offset : &o->length))
                return usage_error("not a number: '%s'", argv[i]);
            *(is_offset ? &o->have_offset : &o->have_length) = true;
        } else if (a[0] == '-' && a[1]) {
            return usage_error("unknown option '%s'", a);
        } else if (!o->command) {
            o->command = a;
        } else if (!o->image) {
            o->image = a;
        } else {
            return usage_error("unexpected argument '%s'", a);
        }
    }
    if (!o->command)
        return usage_error("%s", "no command given");
    if (!o->image)
        return usage_error("%s: no image given", o->command);
    if (o->json && strcmp(o->command, "info"))
        return usage_error("--json is for info, not %s", o->command);
    if ((o->have_length || (o->have_offset && strcmp(o->command, "write"))) &&
        strcmp(o->command, "cat"))
        return usage_error("--offset/--length do not apply to %s", o->command);
    if (!strcmp(o->command, "write") && !o->have_offset)
        return usage_error("%s", "write needs --offset");
    return 0;
}

/* Environment failures are exit 2; a bad image is exit 1. */
static int exit_code_for(int rc)
{
    return rc == VHDX_E_IO || rc == VHDX_E_NOMEM || rc == VHDX_E_ARGUMENT ||
           rc == VHDX_E_NO_SPACE ? EXIT_USAGE : EXIT_INVALID;
}

static int report(const char *image, const struct vhdx_diag *diag)
{
    char message[320];

    vhdx_describe(diag, message, sizeof message);
    fprintf(stderr, "vhdx: %s: %s\n", image, message);
    return exit_code_for(diag->code);
}

struct session {
    struct posix_file file;
    struct vhdx_platform platform;
    struct vhdx_disk *disk;
};

/*
 * -v: what the core cost, for memory and work bounds (tests/hostile.test reads it).
 * After the image is closed (or failed to open), so every release is counted.
 */
static void report_costs(const struct posix_file *file, const char *image)
{
    if (file->verbosity < 1)
        return;
    fprintf(stderr, "vhdx: %s: core peak allocation: %llu bytes (at most %llu asked for at "
            "once; %llu blocks still allocated)\n", image, file->alloc_peak,
            file->alloc_peak_requested, file->alloc_live);
    fprintf(stderr, "vhdx: %s: file I/O: %llu bytes read in %llu calls, %llu bytes written in "
            "%llu calls, %llu flushes\n", image, file->bytes_read, file->reads,
            file->bytes_written, file->writes, file->flushes);
}

static int open_image(struct session *s, const struct options *o, bool writable,
                      unsigned flags)
{
    struct vhdx_diag diag;
    int err, rc;

    err = posix_file_open(&s->file, o->image, writable, &s->platform);
    if (err) {
        fprintf(stderr, "vhdx: %s: %s\n", o->image, strerror(err));
        return EXIT_USAGE;
    }
    s->file.verbosity = o->verbosity;
    rc = vhdx_open(&s->platform, flags | (writable ? VHDX_OPEN_WRITABLE : 0), &s->disk, &diag);
    if (rc) {
        posix_file_close(&s->file);
        rc = report(o->image, &diag);
        report_costs(&s->file, o->image);
        return rc;
    }
    return 0;
}

static int close_image(struct session *s, const char *image)
{
    struct vhdx_diag diag;
    int status = 0;

    if (vhdx_close(s->disk, &diag))
        status = report(image, &diag);
    posix_file_close(&s->file);
    report_costs(&s->file, image);
    return status;
}

static const char *type_name(enum vhdx_disk_type t)
{
    return t == VHDX_TYPE_FIXED ? "fixed" : t == VHDX_TYPE_DYNAMIC ? "dynamic" : "differencing";
}

static const char *log_state_name(enum vhdx_log_state s)
{
    return s == VHDX_LOG_WAS_CLEAN ? "clean"
         : s == VHDX_LOG_REPLAYED ? "replayed" : "replayed-in-memory";
}

/* JSON string body with the escapes JSON needs. */
static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static int cmd_info(const struct options *o)
{
    struct session s;
    struct vhdx_info info;
    char fwg[39], dwg[39], lg[39], vdid[39], rlg[39], plt[39];
    int status = open_image(&s, o, false, 0);

    if (status)
        return status;
    vhdx_get_info(s.disk, &info);
    vhdx_guid_format(&info.file_write_guid, fwg);
    vhdx_guid_format(&info.data_write_guid, dwg);
    vhdx_guid_format(&info.log_guid, lg);
    vhdx_guid_format(&info.virtual_disk_id, vdid);
    vhdx_guid_format(&info.replayed_log_guid, rlg);
    vhdx_guid_format(&info.parent_locator_type, plt);
    if (o->json) {
        printf("{\n  \"file\": ");
        json_string(o->image);
        printf(",\n  \"file_size\": %" PRIu64 ",\n", info.file_size);
        printf("  \"type\": \"%s\",\n", type_name(info.type));
        printf("  \"virtual_size\": %" PRIu64 ",\n", info.virtual_size);
        printf("  \"block_size\": %" PRIu32 ",\n", info.block_size);
        printf("  \"logical_sector_size\": %" PRIu32 ",\n", info.logical_sector_size);
        printf("  \"physical_sector_size\": %" PRIu32 ",\n", info.physical_sector_size);
        printf("  \"header_slot\": %u,\n", info.header_slot);
        printf("  \"header_sequence\": %" PRIu64 ",\n", info.header_sequence);
        printf("  \"log_state\": \"%s\",\n", log_state_name(info.log_state));
        printf("  \"log_entries_replayed\": %" PRIu32 ",\n", info.log_entries_replayed);
        printf("  \"log_sequence_head\": %" PRIu64 ",\n", info.log_sequence_head);
        printf("  \"replayed_log_guid\": \"%s\",\n", rlg);
        printf("  \"log_offset\": %" PRIu64 ",\n  \"log_length\": %" PRIu32 ",\n",
               info.log_offset, info.log_length);
        printf("  \"file_write_guid\": \"%s\",\n", fwg);
        printf("  \"data_write_guid\": \"%s\",\n", dwg);
        printf("  \"log_guid\": \"%s\",\n", lg);
        printf("  \"virtual_disk_id\": \"%s\",\n", vdid);
        printf("  \"bat_offset\": %" PRIu64 ",\n  \"bat_entries\": %" PRIu64 ",\n",
               info.bat_offset, info.bat_entries);
        printf("  \"metadata_offset\": %" PRIu64 ",\n", info.metadata_offset);
        printf("  \"chunk_ratio\": %" PRIu32 ",\n", info.chunk_ratio);
        printf("  \"blocks_total\": %" PRIu64 ",\n  \"blocks_present\": %" PRIu64 ",\n",
               info.blocks_total, info.blocks_present);
        printf("  \"parent_locator\": ");
        if (info.parent_locator_entries || info.type == VHDX_TYPE_DIFFERENCING) {
            printf("{\n    \"type\": \"%s\",\n    \"entries\": {", plt);
            for (uint32_t i = 0; i < info.parent_locator_entries; i++) {
                const char *key, *value;

                vhdx_parent_locator_entry(s.disk, i, &key, &value);
                printf("%s\n      ", i ? "," : "");
                json_string(key);
                printf(": ");
                json_string(value);
            }
            printf("%s}\n  }\n", info.parent_locator_entries ? "\n    " : "");
        } else {
            printf("null\n");
        }
        printf("}\n");
    } else {
        printf("file:                 %s (%" PRIu64 " bytes)\n", o->image, info.file_size);
        printf("type:                 %s\n", type_name(info.type));
        printf("virtual size:         %" PRIu64 " bytes\n", info.virtual_size);
        printf("block size:           %" PRIu32 " bytes\n", info.block_size);
        printf("logical sector size:  %" PRIu32 "\n", info.logical_sector_size);
        printf("physical sector size: %" PRIu32 "\n", info.physical_sector_size);
        printf("current header:       %u (sequence %" PRIu64 ")\n", info.header_slot,
               info.header_sequence);
        if (info.log_state == VHDX_LOG_WAS_CLEAN)
            printf("log:                  clean\n");
        else
            printf("log:                  dirty: %" PRIu32 " entries (head sequence %" PRIu64
                   ", LogGuid %s) replayed %s\n", info.log_entries_replayed,
                   info.log_sequence_head, rlg,
                   info.log_state == VHDX_LOG_REPLAYED ? "into the file" : "in memory");
        printf("file write guid:      %s\n", fwg);
        printf("data write guid:      %s\n", dwg);
        printf("virtual disk id:      %s\n", vdid);
        printf("blocks present:       %" PRIu64 " of %" PRIu64 "\n", info.blocks_present,
               info.blocks_total);
        printf("BAT:                  offset %" PRIu64 ", %" PRIu64 " entries, chunk ratio %"
               PRIu32 "\n", info.bat_offset, info.bat_entries, info.chunk_ratio);
        printf("metadata region:      offset %" PRIu64 "\n", info.metadata_offset);
        printf("log region:           offset %" PRIu64 ", %" PRIu32 " bytes\n",
               info.log_offset, info.log_length);
        if (info.parent_locator_entries || info.type == VHDX_TYPE_DIFFERENCING) {
            printf("parent locator:       type %s\n", plt);
            for (uint32_t i = 0; i < info.parent_locator_entries; i++) {
                const char *key, *value;

                vhdx_parent_locator_entry(s.disk, i, &key, &value);
                printf("  %s = %s\n", key, value);
            }
        }
    }
    return close_image(&s, o->image);
}

static bool write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    const uint64_t *w = (const uint64_t *)(const void *)p;

    for (size_t i = 0; i < n / 8; i++) {
        if (w[i])
            return false;
    }
    for (size_t i = n / 8 * 8; i < n; i++) {
        if (p[i])
            return false;
    }
    return true;
}

/*
 * When stdout is a regular file (not opened for appending), runs of zeros become holes,
 * so `vhdx cat big.vhdx > big.raw` is as sparse as the disk, like `qemu-img convert`.
 */
static bool stdout_can_be_sparse(void)
{
    struct stat st;
    int flags = fcntl(STDOUT_FILENO, F_GETFL);

    return fstat(STDOUT_FILENO, &st) == 0 && S_ISREG(st.st_mode) && flags >= 0 &&
           !(flags & O_APPEND) && lseek(STDOUT_FILENO, 0, SEEK_CUR) >= 0;
}

static int cmd_cat(const struct options *o)
{
    struct session s;
    struct vhdx_info info;
    uint8_t *buffer;
    uint64_t start, end, sector_size;
    bool sparse = stdout_can_be_sparse(), hole_at_end = false;
    int status = open_image(&s, o, false, 0);

    if (status)
        return status;
    vhdx_get_info(s.disk, &info);
    sector_size = info.logical_sector_size;
    start = o->have_offset ? o->offset : 0;
    end = o->have_length ? start + o->length : info.virtual_size;
    if (start > info.virtual_size || end > info.virtual_size || end < start) {
        fprintf(stderr, "vhdx: %s: range past the end of the %" PRIu64 "-byte disk\n",
                o->image, info.virtual_size);
        close_image(&s, o->image);
        return EXIT_USAGE;
    }
    buffer = aligned_alloc(4096, IO_CHUNK);
    if (!buffer) {
        close_image(&s, o->image);
        return EXIT_USAGE;
    }
    /* Read whole sectors covering [start, end) and send the wanted bytes. */
    for (uint64_t pos = start; pos < end && !status;) {
        uint64_t first = pos / sector_size;
        uint64_t skip = pos % sector_size;
        uint64_t want = end - pos < IO_CHUNK - skip ? end - pos : IO_CHUNK - skip;
        uint64_t count = (skip + want + sector_size - 1) / sector_size;
        int rc = vhdx_read(s.disk, first, count, buffer);

        if (rc) {
            status = report(o->image, vhdx_last_diag(s.disk));
        } else if (sparse && all_zero(buffer + skip, (size_t)want)) {
            hole_at_end = true;
            if (lseek(STDOUT_FILENO, (off_t)want, SEEK_CUR) < 0)
                status = EXIT_USAGE;
        } else if (!write_all(STDOUT_FILENO, buffer + skip, (size_t)want)) {
            fprintf(stderr, "vhdx: writing to stdout: %s\n", strerror(errno));
            status = EXIT_USAGE;
        } else {
            hole_at_end = false;
        }
        pos += want;
    }
    /* A trailing hole needs the file size set explicitly. */
    if (!status && hole_at_end) {
        off_t here = lseek(STDOUT_FILENO, 0, SEEK_CUR);

        if (here < 0 || ftruncate(STDOUT_FILENO, here) != 0) {
            fprintf(stderr, "vhdx: extending stdout: %s\n", strerror(errno));
            status = EXIT_USAGE;
        }
    }
    free(buffer);
    int close_status = close_image(&s, o->image);
    return status ? status : close_status;
}

static int cmd_check(const struct options *o)
{
    struct session s;
    struct vhdx_info info;
    struct vhdx_diag diag;
    int err, rc;

    err = posix_file_open(&s.file, o->image, false, &s.platform);
    if (err) {
        fprintf(stderr, "vhdx: %s: %s\n", o->image, strerror(err));
        return EXIT_USAGE;
    }
    s.file.verbosity = o->verbosity;
    rc = vhdx_open(&s.platform, VHDX_OPEN_CHECK, &s.disk, &diag);
    if (rc) {
        posix_file_close(&s.file);
        rc = report(o->image, &diag);
        report_costs(&s.file, o->image);
        return rc;
    }
    vhdx_get_info(s.disk, &info);
    printf("%s: clean: %s, %" PRIu64 " bytes, %" PRIu64 " of %" PRIu64 " blocks present",
           o->image, type_name(info.type), info.virtual_size, info.blocks_present,
           info.blocks_total);
    if (info.log_state != VHDX_LOG_WAS_CLEAN)
        printf("; dirty log of %" PRIu32 " entries replays cleanly (run 'vhdx replay')",
               info.log_entries_replayed);
    printf("\n");
    return close_image(&s, o->image);
}

/* Fill `buffer` from stdin; returns bytes read (short only at end of input). */
static ssize_t read_full(uint8_t *buffer, size_t size)
{
    size_t got = 0;

    while (got < size) {
        ssize_t n = read(STDIN_FILENO, buffer + got, size - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

static int cmd_write(const struct options *o)
{
    struct session s;
    struct vhdx_info info;
    struct stat st;
    uint8_t *buffer;
    uint64_t pos = o->offset;
    int status = open_image(&s, o, true, 0);

    if (status)
        return status;
    vhdx_get_info(s.disk, &info);
    if (pos % info.logical_sector_size) {
        fprintf(stderr, "vhdx: %s: offset %" PRIu64 " is not a multiple of the %" PRIu32
                "-byte logical sector\n", o->image, pos, info.logical_sector_size);
        close_image(&s, o->image);
        return EXIT_USAGE;
    }
    /* Refuse a badly sized input before writing any of it, when we can know its size. */
    if (fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode) &&
        ((uint64_t)st.st_size % info.logical_sector_size ||
         pos + (uint64_t)st.st_size > info.virtual_size)) {
        fprintf(stderr, "vhdx: %s: input of %lld bytes is not whole %" PRIu32
                "-byte sectors, or runs past the end of the disk\n", o->image,
                (long long)st.st_size, info.logical_sector_size);
        close_image(&s, o->image);
        return EXIT_USAGE;
    }
    buffer = aligned_alloc(4096, IO_CHUNK);
    while (buffer && !status) {
        ssize_t got = read_full(buffer, IO_CHUNK);

        if (got < 0) {
            fprintf(stderr, "vhdx: reading stdin: %s\n", strerror(errno));
            status = EXIT_USAGE;
            break;
        }
        if (got == 0)
            break;
        if ((uint64_t)got % info.logical_sector_size) {
            fprintf(stderr, "vhdx: %s: input ends with a partial %" PRIu32
                    "-byte sector; the last %zd bytes were not written\n", o->image,
                    info.logical_sector_size, got);
            status = EXIT_USAGE;
            break;
        }
        if (vhdx_write(s.disk, pos / info.logical_sector_size,
                       (uint64_t)got / info.logical_sector_size, buffer))
            status = report(o->image, vhdx_last_diag(s.disk));
        pos += (uint64_t)got;
    }
    free(buffer);
    int close_status = close_image(&s, o->image);
    return status ? status : close_status;
}

static int cmd_replay(const struct options *o)
{
    struct session s;
    struct vhdx_info info;
    int status = open_image(&s, o, true, 0);

    if (status)
        return status;
    vhdx_get_info(s.disk, &info);
    if (info.log_state == VHDX_LOG_REPLAYED)
        printf("%s: replayed %" PRIu32 " log entries (head sequence %" PRIu64 ")\n",
               o->image, info.log_entries_replayed, info.log_sequence_head);
    else
        printf("%s: the log is clean; nothing to replay\n", o->image);
    return close_image(&s, o->image);
}

int main(int argc, char **argv)
{
    struct options o;
    int status = parse_args(argc, argv, &o);

    if (status)
        return status;
    if (!strcmp(o.command, "info"))
        return cmd_info(&o);
    if (!strcmp(o.command, "cat"))
        return cmd_cat(&o);
    if (!strcmp(o.command, "check"))
        return cmd_check(&o);
    if (!strcmp(o.command, "write"))
        return cmd_write(&o);
    if (!strcmp(o.command, "replay"))
        return cmd_replay(&o);
    return usage_error("unknown command '%s'", o.command);
}

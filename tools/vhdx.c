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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

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
    "  create IMAGE --size N [--block-size N] [--sector-size 512|4096] [--fixed]\n"
    "  create CHILD --parent PARENT         a new image, or a differencing child of\n"
    "                                       PARENT (its size and sectors; the child's\n"
    "                                       locator names the parent); never overwrites\n"
    "  merge CHILD                          commit a differencing child into its parent\n"
    "                                       (crash-safe); the parent then reads as the\n"
    "                                       child did\n"
    "  zero IMAGE --offset N --length N     make the range read as zeros (whole blocks\n"
    "                                       of a dynamic disk give their space back)\n"
    "  discard IMAGE --offset N --length N  the range is no longer needed: whole blocks\n"
    "                                       of a dynamic disk are freed, the rest is kept\n"
    "  map IMAGE [--json]                   which ranges are stored (data) and which read\n"
    "                                       as zeros with nothing stored (zero)\n"
    "  serve IMAGE (--socket PATH | --port N [--bind ADDR]) [--read-only]\n"
    "                                       serve the disk over NBD until SIGTERM or\n"
    "                                       SIGINT (TCP: 127.0.0.1 unless --bind)\n"
    "  attach IMAGE [/dev/nbdN] [--read-only] [--background]\n"
    "                                       the kernel's NBD device on the disk; prints\n"
    "                                       the device; serves until detached\n"
    "  attach IMAGE /dev/nbdN --reconnect   take over the device whose server died (the\n"
    "                                       same disk, size and sectors), then serve\n"
    "  attach --firmware [--read-only] [--dry-run] [--wait SECONDS]\n"
    "                                       (initramfs) attach what the firmware handed\n"
    "                                       over, or the vhdx= kernel parameter\n"
    "  detach /dev/nbdN | --all             disconnect; the image is flushed and closed\n"
    "\n"
    "Options:\n"
    "  -v, --verbose   also say what opening did (log replay, fallbacks) and what it\n"
    "                  cost (the core's peak allocation, bytes read and written); info\n"
    "                  -v: the metadata cache; serve: each connection and refused request\n"
    "  --cache SIZE    metadata cache (default 1M: 256 BAT pages of 4K, each\n"
    "                  mapping 512 blocks); any command that opens the image\n"
    "  --volume-root DIR  differencing parents named from the root of a Windows volume\n"
    "                  (volume_path, absolute_win32_path) are looked for under DIR\n"
    "                  (default: the mount point of the file system holding the image)\n"
    "  --dead-timeout SECONDS  attach: how long the kernel holds the device's I/O\n"
    "                  while its server is gone, for `attach --reconnect` to take over\n"
    "                  (default 120; 0: fail the I/O at once; at most 86400)\n"
    "  -h, --help      this text\n"
    "  --version       the version\n"
    "\n"
    "info, cat and check never write: a dirty log is replayed in memory.\n"
    "Numbers are decimal or 0x hex, with an optional K, M, G or T suffix (x1024).\n";

int usage_error(const char *fmt, const char *arg)
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

static int cmd_info(const struct options *o);
static int cmd_cat(const struct options *o);
static int cmd_check(const struct options *o);
static int cmd_write(const struct options *o);
static int cmd_replay(const struct options *o);
static int cmd_zero(const struct options *o);
static int cmd_map(const struct options *o);

/* The options: the bit each sets in options.given, and where a value goes. */
enum option_value { VALUE_NONE, VALUE_NUMBER, VALUE_TEXT };
static const struct option_spec {
    const char *name;
    unsigned bit;
    enum option_value value;
    size_t field;               /* offsetof(struct options, ...) of the value */
} option_table[] = {
    { "--json", OPT_JSON, VALUE_NONE, 0 },
    { "--offset", OPT_OFFSET, VALUE_NUMBER, offsetof(struct options, offset) },
    { "--length", OPT_LENGTH, VALUE_NUMBER, offsetof(struct options, length) },
    { "--socket", OPT_SOCKET, VALUE_TEXT, offsetof(struct options, socket_path) },
    { "--port", OPT_PORT, VALUE_NUMBER, offsetof(struct options, port) },
    { "--bind", OPT_BIND, VALUE_TEXT, offsetof(struct options, bind_address) },
    { "--read-only", OPT_READ_ONLY, VALUE_NONE, 0 },
    { "--cache", OPT_CACHE, VALUE_NUMBER, offsetof(struct options, cache_bytes) },
    { "--size", OPT_SIZE, VALUE_NUMBER, offsetof(struct options, size) },
    { "--block-size", OPT_BLOCK_SIZE, VALUE_NUMBER, offsetof(struct options, block_size) },
    { "--sector-size", OPT_SECTOR_SIZE, VALUE_NUMBER, offsetof(struct options, sector_size) },
    { "--fixed", OPT_FIXED, VALUE_NONE, 0 },
    { "--parent", OPT_PARENT, VALUE_TEXT, offsetof(struct options, parent) },
    { "--volume-root", OPT_VOLUME_ROOT, VALUE_TEXT, offsetof(struct options, volume_root) },
    { "--firmware", OPT_FIRMWARE, VALUE_NONE, 0 },
    { "--background", OPT_BACKGROUND, VALUE_NONE, 0 },
    { "--dry-run", OPT_DRY_RUN, VALUE_NONE, 0 },
    { "--all", OPT_ALL, VALUE_NONE, 0 },
    { "--wait", OPT_WAIT, VALUE_NUMBER, offsetof(struct options, wait_seconds) },
    { "--reconnect", OPT_RECONNECT, VALUE_NONE, 0 },
    { "--dead-timeout", OPT_DEAD_TIMEOUT, VALUE_NUMBER, offsetof(struct options, dead_timeout) },
};

/* The commands: which options each accepts and which it needs; `arguments`: how many
 * arguments follow the command (the first is IMAGE); `bare`: options with which the
 * command needs no argument at all (it checks that itself). */
static const struct command {
    const char *name;
    int (*run)(const struct options *o);
    unsigned accepted, required;
    unsigned arguments, bare;
} command_table[] = {
    { "info", cmd_info, OPT_JSON | OPT_CACHE | OPT_VOLUME_ROOT, 0, 1, 0 },
    { "cat", cmd_cat, OPT_OFFSET | OPT_LENGTH | OPT_CACHE | OPT_VOLUME_ROOT, 0, 1, 0 },
    { "check", cmd_check, OPT_CACHE | OPT_VOLUME_ROOT, 0, 1, 0 },
    { "write", cmd_write, OPT_OFFSET | OPT_CACHE | OPT_VOLUME_ROOT, OPT_OFFSET, 1, 0 },
    { "replay", cmd_replay, OPT_CACHE | OPT_VOLUME_ROOT, 0, 1, 0 },
    { "zero", cmd_zero, OPT_OFFSET | OPT_LENGTH | OPT_CACHE, OPT_OFFSET | OPT_LENGTH, 1, 0 },
    { "discard", cmd_zero, OPT_OFFSET | OPT_LENGTH | OPT_CACHE, OPT_OFFSET | OPT_LENGTH, 1,
      0 },
    { "map", cmd_map, OPT_JSON | OPT_CACHE | OPT_VOLUME_ROOT, 0, 1, 0 },
    { "serve", cmd_serve, OPT_SOCKET | OPT_PORT | OPT_BIND | OPT_READ_ONLY | OPT_CACHE |
      OPT_VOLUME_ROOT, 0, 1, 0 },
    { "create", cmd_create, OPT_SIZE | OPT_BLOCK_SIZE | OPT_SECTOR_SIZE | OPT_FIXED | OPT_PARENT,
      0, 1, 0 },
    { "merge", cmd_merge, OPT_CACHE | OPT_VOLUME_ROOT, 0, 1, 0 },
    { "attach", cmd_attach, OPT_READ_ONLY | OPT_BACKGROUND | OPT_FIRMWARE | OPT_DRY_RUN |
      OPT_WAIT | OPT_RECONNECT | OPT_DEAD_TIMEOUT | OPT_CACHE | OPT_VOLUME_ROOT, 0, 2,
      OPT_FIRMWARE },
    { "detach", cmd_detach, OPT_ALL, 0, 1, OPT_ALL },
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The strict parser: one command, one image, known options each given once. */
static int parse_args(int argc, char **argv, struct options *o, const struct command **command)
{
    memset(o, 0, sizeof *o);
    *command = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const struct option_spec *spec = NULL;

        for (size_t k = 0; k < COUNT(option_table); k++) {
            if (!strcmp(a, option_table[k].name))
                spec = &option_table[k];
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            exit(0);
        } else if (!strcmp(a, "--version")) {
            printf("vhdx %s\n", VHDX_CORE_VERSION);
            exit(0);
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            o->verbosity++;
        } else if (spec) {
            char *field = (char *)o + spec->field;

            if (o->given & spec->bit)
                return usage_error("%s given twice", a);
            o->given |= spec->bit;
            if (spec->value == VALUE_NONE)
                continue;
            if (i + 1 >= argc)
                return usage_error(spec->value == VALUE_NUMBER ? "%s needs a number"
                                                               : "%s needs a value", a);
            i++;
            if (spec->value == VALUE_TEXT)
                *(const char **)(void *)field = argv[i];
            else if (!parse_number(argv[i], (uint64_t *)(void *)field))
                return usage_error("not a number: '%s'", argv[i]);
        } else if (a[0] == '-' && a[1]) {
            return usage_error("unknown option '%s'", a);
        } else if (!o->command) {
            o->command = a;
        } else if (!o->image) {
            o->image = a;
        } else if (!o->device) {
            o->device = a;
        } else {
            return usage_error("unexpected argument '%s'", a);
        }
    }
    if (!o->command)
        return usage_error("%s", "no command given");
    for (size_t k = 0; k < COUNT(command_table); k++) {
        if (!strcmp(o->command, command_table[k].name))
            *command = &command_table[k];
    }
    if (!*command)
        return usage_error("unknown command '%s'", o->command);
    if ((o->given & OPT_CACHE) && (o->cache_bytes < VHDX_MIN_CACHE_BYTES ||
                                   o->cache_bytes > SIZE_MAX))
        return usage_error("%s", "--cache: not a cache size (4K or more)");
    if (!o->image && !(o->given & (*command)->bare))
        return usage_error("%s: no image given", o->command);
    if (o->device && (*command)->arguments < 2)
        return usage_error("unexpected argument '%s'", o->device);
    for (size_t k = 0; k < COUNT(option_table); k++) {
        const struct option_spec *spec = &option_table[k];
        char text[64];

        if ((o->given & spec->bit) && !((*command)->accepted & spec->bit)) {
            snprintf(text, sizeof text, "%s does not apply to %s", spec->name, o->command);
            return usage_error("%s", text);
        }
        if (((*command)->required & spec->bit) && !(o->given & spec->bit)) {
            snprintf(text, sizeof text, "%s needs %s", o->command, spec->name);
            return usage_error("%s", text);
        }
    }
    return 0;
}

/* A bad image is exit 1; everything else (the environment, the request) exit 2. */
static int exit_code_for(int rc)
{
    enum vhdx_error_class class = vhdx_error_class((enum vhdx_error)rc);

    return class == VHDX_CLASS_CORRUPT || class == VHDX_CLASS_UNSUPPORTED ? EXIT_INVALID
                                                                          : EXIT_USAGE;
}

int report(const char *image, const struct vhdx_diag *diag)
{
    char message[320];

    vhdx_describe(diag, message, sizeof message);
    fprintf(stderr, "vhdx: %s: %s\n", image, message);
    return exit_code_for(diag->code);
}

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

/* What posix_file_open's errors mean here. */
static void report_open_error(const char *image, int err, bool writable)
{
    if (err == EBUSY)
        fprintf(stderr, "vhdx: %s: in use: %s\n", image, writable
                ? "another program has the image open (vhdx serve, write or replay, or "
                  "QEMU); one writer at a time"
                : "another program has the image open for writing (vhdx serve, write or "
                  "replay, or QEMU)");
    else
        fprintf(stderr, "vhdx: %s: %s\n", image, strerror(err));
}

/* Errors about a differencing disk's chain, not about the file itself. */
static bool chain_error(enum vhdx_error code)
{
    return code == VHDX_E_LOCATOR_KEY || code == VHDX_E_PARENT_NOT_FOUND ||
           code == VHDX_E_PARENT_OPEN || code == VHDX_E_PARENT_LINKAGE ||
           code == VHDX_E_PARENT_SECTOR_SIZE || code == VHDX_E_PARENT_CYCLE ||
           code == VHDX_E_CHAIN_TOO_DEEP || code == VHDX_E_PARENT_SIZE;
}

int open_image(struct session *s, const struct options *o, bool writable, unsigned flags)
{
    return open_image_with(s, o, o->image, writable, flags, 0);
}

int open_image_with(struct session *s, const struct options *o, const char *path,
                    bool writable, unsigned flags, unsigned posix_flags)
{
    struct vhdx_open_options options;
    struct vhdx_diag diag;
    int err, rc;

    err = posix_file_open_with(&s->file, path, writable, posix_flags, &s->platform);
    if (err) {
        report_open_error(path, err, writable);
        return EXIT_USAGE;
    }
    s->file.verbosity = o->verbosity;
    s->file.volume_root = o->volume_root;
    options.flags = flags | (writable ? VHDX_OPEN_WRITABLE : 0);
    options.cache_bytes = o->cache_bytes;
    rc = vhdx_open_with(&s->platform, &options, &s->disk, &diag);
    s->last_open_error = diag;
    if (rc) {
        posix_file_close(&s->file);
        /* A broken chain under info is described, not only reported. */
        if (!(flags & VHDX_OPEN_NO_PARENT) && !strcmp(o->command, "info") &&
            chain_error(diag.code))
            return EXIT_INVALID;
        rc = report(path, &diag);
        report_costs(&s->file, path);
        return rc;
    }
    return 0;
}

int close_image(struct session *s, const char *image)
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

/* The parents below `disk`: one line each, or a JSON array. */
static void print_chain(const struct vhdx_disk *disk, bool json)
{
    const struct vhdx_disk *level = disk;
    unsigned n = 0;

    if (json)
        printf("  \"chain\": [");
    for (struct vhdx_disk *parent; (parent = vhdx_parent(level)); level = parent, n++) {
        struct vhdx_info child_info, info;
        char dwg[39];

        vhdx_get_info(level, &child_info);
        vhdx_get_info(parent, &info);
        vhdx_guid_format(&info.data_write_guid, dwg);
        if (json) {
            printf("%s\n    {\"path\": ", n ? "," : "");
            json_string(child_info.parent_path);
            printf(", \"found_through\": \"%s\", \"linkage\": \"%s\", \"type\": \"%s\", "
                   "\"virtual_size\": %" PRIu64 ", \"data_write_guid\": \"%s\"}",
                   child_info.parent_key,
                   child_info.parent_linkage2 ? "parent_linkage2" : "parent_linkage",
                   type_name(info.type), info.virtual_size, dwg);
        } else {
            printf("parent %u:%*s %s (found through %s; DataWriteGuid %s matches %s)\n"
                   "                      %s, %" PRIu64 " bytes\n", n + 1, n + 1 < 10 ? 12 : 11,
                   "", child_info.parent_path, child_info.parent_key, dwg,
                   child_info.parent_linkage2 ? "parent_linkage2" : "parent_linkage",
                   type_name(info.type), info.virtual_size);
        }
    }
    if (json)
        printf("%s],\n", n ? "\n  " : "");
}

static int cmd_info(const struct options *o)
{
    struct session s;
    struct vhdx_info info;
    struct options alone = *o;
    char fwg[39], dwg[39], lg[39], vdid[39], rlg[39], plt[39], broken[320] = "";
    int status = open_image(&s, o, false, 0);

    /* A broken chain still lets the child be described: say why, show the rest. */
    if (status && chain_error(s.last_open_error.code)) {
        vhdx_describe(&s.last_open_error, broken, sizeof broken);
        status = open_image(&s, &alone, false, VHDX_OPEN_NO_PARENT);
    }
    if (status)
        return status;
    vhdx_get_info(s.disk, &info);
    vhdx_guid_format(&info.file_write_guid, fwg);
    vhdx_guid_format(&info.data_write_guid, dwg);
    vhdx_guid_format(&info.log_guid, lg);
    vhdx_guid_format(&info.virtual_disk_id, vdid);
    vhdx_guid_format(&info.replayed_log_guid, rlg);
    vhdx_guid_format(&info.parent_locator_type, plt);
    if (o->given & OPT_JSON) {
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
        printf("  \"blocks_partial\": %" PRIu64 ",\n", info.blocks_partial);
        printf("  \"memory_peak\": %" PRIu64 ",\n", info.memory_peak);
        printf("  \"blocks_total\": %" PRIu64 ",\n  \"blocks_present\": %" PRIu64 ",\n",
               info.blocks_total, info.blocks_present);
        print_chain(s.disk, true);
        printf("  \"chain_error\": ");
        if (broken[0])
            json_string(broken);
        else
            printf("null");
        printf(",\n  \"parent_locator\": ");
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
        printf("blocks present:       %" PRIu64 " of %" PRIu64, info.blocks_present,
               info.blocks_total);
        if (info.blocks_partial)
            printf(" (and %" PRIu64 " partially present)", info.blocks_partial);
        printf("\n");
        printf("BAT:                  offset %" PRIu64 ", %" PRIu64 " entries, chunk ratio %"
               PRIu32 "\n", info.bat_offset, info.bat_entries, info.chunk_ratio);
        printf("metadata region:      offset %" PRIu64 "\n", info.metadata_offset);
        printf("log region:           offset %" PRIu64 ", %" PRIu32 " bytes\n",
               info.log_offset, info.log_length);
        if (o->verbosity) {
            printf("room for new blocks:  %" PRIu64 " bytes in the file past %" PRIu64
                   " (all blocks need %" PRIu64 " more)\n",
                   info.file_size > info.used_size ? info.file_size - info.used_size : 0,
                   info.used_size, info.room_wanted);
            printf("metadata cache:       %" PRIu32 " pages, %" PRIu64 " hits, %" PRIu64
                   " misses\n", info.cache_pages, info.cache_hits, info.cache_misses);
            printf("core memory:          %" PRIu64 " bytes at most, %" PRIu64 " now\n",
                   info.memory_peak, info.memory_in_use);
        }
        if (info.parent_locator_entries || info.type == VHDX_TYPE_DIFFERENCING) {
            printf("parent locator:       type %s\n", plt);
            for (uint32_t i = 0; i < info.parent_locator_entries; i++) {
                const char *key, *value;

                vhdx_parent_locator_entry(s.disk, i, &key, &value);
                printf("  %s = %s\n", key, value);
            }
            print_chain(s.disk, false);
            if (broken[0])
                printf("parent:               cannot be used: %s\n", broken);
        }
    }
    status = close_image(&s, o->image);
    return status ? status : broken[0] ? EXIT_INVALID : 0;
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
    start = o->given & OPT_OFFSET ? o->offset : 0;
    end = o->given & OPT_LENGTH ? start + o->length : info.virtual_size;
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
    struct vhdx_open_options options;
    struct vhdx_diag diag;
    int err, rc;

    err = posix_file_open(&s.file, o->image, false, &s.platform);
    if (err) {
        report_open_error(o->image, err, false);
        return EXIT_USAGE;
    }
    s.file.verbosity = o->verbosity;
    s.file.volume_root = o->volume_root;
    options.flags = VHDX_OPEN_CHECK;
    options.cache_bytes = o->cache_bytes;
    rc = vhdx_open_with(&s.platform, &options, &s.disk, &diag);
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
    if (info.blocks_partial)
        printf(", %" PRIu64 " partially present", info.blocks_partial);
    if (info.chain_depth)
        printf("; chain of %" PRIu32 " parent(s) opened and linked", info.chain_depth);
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

/* `zero` and `discard`: --offset and --length in whole logical sectors, inside the disk. */
static int cmd_zero(const struct options *o)
{
    struct session s;
    struct vhdx_info info;
    uint64_t sector_size;
    int rc, status = open_image(&s, o, true, 0);

    if (status)
        return status;
    vhdx_get_info(s.disk, &info);
    sector_size = info.logical_sector_size;
    if (o->offset % sector_size || o->length % sector_size || o->offset > info.virtual_size ||
        o->length > info.virtual_size - o->offset) {
        fprintf(stderr, "vhdx: %s: --offset %" PRIu64 " --length %" PRIu64 " is not whole %"
                PRIu64 "-byte sectors inside the %" PRIu64 "-byte disk\n", o->image,
                o->offset, o->length, sector_size, info.virtual_size);
        close_image(&s, o->image);
        return EXIT_USAGE;
    }
    rc = !strcmp(o->command, "zero")
         ? vhdx_write_zeroes(s.disk, o->offset / sector_size, o->length / sector_size)
         : vhdx_discard(s.disk, o->offset / sector_size, o->length / sector_size);
    if (rc)
        status = report(o->image, vhdx_last_diag(s.disk));
    int close_status = close_image(&s, o->image);
    return status ? status : close_status;
}

/*
 * `map`: the allocation map in runs.  Text: "START LENGTH data|zero" per run; --json:
 * the shape of `qemu-img map --output=json` (no "offset": a run may span blocks stored
 * anywhere in the file).
 */
static int cmd_map(const struct options *o)
{
    struct session s;
    struct vhdx_info info;
    uint64_t sector = 0, sectors, start = 0, length = 0;
    unsigned last = VHDX_MAP_DATA;
    bool json = o->given & OPT_JSON, first = true;
    int status = open_image(&s, o, false, 0);

    if (status)
        return status;
    vhdx_get_info(s.disk, &info);
    sectors = info.virtual_size / info.logical_sector_size;
    if (json)
        printf("[");
    /* One more turn at the end prints the last run. */
    for (;;) {
        uint64_t run = 0;
        unsigned state = last;

        if (sector < sectors && vhdx_map(s.disk, sector, sectors - sector, &run, &state)) {
            status = report(o->image, vhdx_last_diag(s.disk));
            break;
        }
        if (length && (state != last || sector == sectors)) {
            bool data = last == VHDX_MAP_DATA;

            if (json)
                printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": 0, "
                       "\"present\": %s, \"zero\": %s, \"data\": %s}", first ? "" : ",\n",
                       start, length, data ? "true" : "false", data ? "false" : "true",
                       data ? "true" : "false");
            else
                printf("%14" PRIu64 " %14" PRIu64 "  %s\n", start, length,
                       data ? "data" : "zero");
            first = false;
            start += length;
            length = 0;
        }
        if (sector == sectors)
            break;
        last = state;
        length += run * info.logical_sector_size;
        sector += run;
    }
    if (json)
        printf("]\n");
    int close_status = close_image(&s, o->image);
    return status ? status : close_status;
}

int main(int argc, char **argv)
{
    struct options o;
    const struct command *command;
    const char *base = strrchr(argv[0], '/');
    int status;

    /* systemd's shutdown pivot runs /run/initramfs/shutdown (a copy of this program). */
    if (!strcmp(base ? base + 1 : argv[0], "shutdown"))
        return shutdown_main(argc, argv);
    status = parse_args(argc, argv, &o, &command);
    o.argv = argv;
    return status ? status : command->run(&o);
}

/*
 * config.h - the disk list: vhdx.cfg, or the driver's LoadOptions in the same syntax.
 *
 * Plain C with no firmware headers, so the boot program can share it and the host can
 * test it (tests/efi/test_config.c).
 *
 * Syntax, one item per line (LF or CR LF; '#' starts a comment; blanks separate words):
 *
 *     # a disk: the file on the ESP, then options
 *     image=\EFI\disks\win.vhdx
 *     image=data.vhdx ro reserve=256M
 *     image="\My Disks\x.vhdx"
 *     # global options, on lines of their own
 *     verbose
 *     reserve=128M
 *
 * Disk line keys: image=PATH (required; '\' or '/' separators; a path that does not
 * start with a separator is relative to the directory the driver was loaded from;
 * double quotes allow blanks), ro (read-only), ram (copy the disk into memory and
 * publish it as a RAM disk the OS finds through ACPI NFIT; the file is only read),
 * reserve=SIZE (room for new blocks, see mount.h), expand (room for every block),
 * verbose (more messages about this disk), own_nfit (ram disks: our own Block I/O, NFIT
 * and SSDT even when the firmware has a RAM disk driver: a test switch, and a way
 * around a firmware driver that misbehaves), snapshot (a throw-away differencing child
 * is made beside the image at mount and takes every write; see efi/snapshot.c).
 * Global keys: verbose (every disk, and the driver), reserve=SIZE or expand (the
 * default for disks without their own), own_nfit, loader=PATH (the boot program's loader inside
 * the boot disk, from the root of the file system it is found on; the driver has no
 * use for it and says so).  SIZE is a decimal number with an optional K, M, G or T
 * suffix (binary multiples).  The keys are a table in config.c.
 *
 * Strict: an unknown key, a value where none belongs, a missing value, a repeated key,
 * reserve= and expand together, ram with ro, reserve= or expand (a RAM disk never
 * writes its file), or an unterminated quote is reported with the line
 * number, and that whole line is skipped (a misspelt "ro" must not mount a disk
 * writable).
 */
#ifndef VHDX_EFI_CONFIG_H
#define VHDX_EFI_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_PATH_MAX  256        /* bytes of a path, NUL included */
#define CONFIG_MAX_DISKS 16
#define CONFIG_MAX_RESERVE (1ull << 40)

struct config_disk {
    char path[CONFIG_PATH_MAX];     /* as written, quotes removed */
    unsigned line;
    bool read_only;
    bool verbose;
    bool reserve_given;
    uint64_t reserve;               /* bytes, when reserve_given */
    bool expand;
    bool ram;
    bool own_nfit;
    bool snapshot;
};

struct config {
    bool verbose;
    bool reserve_given;
    uint64_t reserve;
    bool expand;
    bool own_nfit;
    char loader[CONFIG_PATH_MAX];   /* loader=, quotes removed; "" when not given */
    unsigned loader_line;           /* 0 when not given */
    unsigned disk_count;
    unsigned errors;                /* problems reported */
    struct config_disk disks[CONFIG_MAX_DISKS];
};

/* Called once per problem: `line` is 1-based (0: not about a line). */
typedef void (*config_report_fn)(void *context, unsigned line, const char *message);

/*
 * Parse `length` bytes of UTF-8 text into `config` (cleared first).  Every problem is
 * reported through `report` and counted in config->errors; the lines without problems
 * still count.
 */
void config_parse(struct config *config, const char *text, size_t length,
                  config_report_fn report, void *context);

/*
 * Turn raw bytes (a file, or LoadOptions) into UTF-8 text for config_parse: UTF-16LE
 * (with a byte-order mark, or recognised by an ASCII first character) is converted, a
 * UTF-8 byte-order mark is dropped, and the text ends at the first NUL.  Returns the
 * length written to `out` (not NUL-terminated), or (size_t)-1 when `out` is too small
 * or non-NUL bytes follow a NUL (`*why` says which).
 */
size_t config_decode(const void *data, size_t size, char *out, size_t out_size,
                     const char **why);

/*
 * The canonical path of a disk on the ESP: `path` taken from `directory` (like
 * "\EFI\vhdx") unless it starts with a separator, '/' turned into '\', empty and "."
 * components dropped.  The result starts with '\'.  Returns NULL on success, else
 * why the path was refused ("..", too long, names the root directory).
 */
const char *config_resolve_path(const char *directory, const char *path, char *out,
                                size_t out_size);

/* The same, but with `allow_up` a ".." component goes up one directory (never above the
 * root): the paths of differencing parents (platform/efi_esp.c). */
const char *config_join_path(const char *directory, const char *path, bool allow_up,
                             char *out, size_t out_size);

#endif

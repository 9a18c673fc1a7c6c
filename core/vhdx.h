/*
 * vhdx.h - the one public header of the VHDX core.
 *
 * The core reads, writes and repairs VHDX files (Microsoft MS-VHDX) without libc or
 * firmware headers: every byte of I/O, every allocation and every message goes through
 * the platform contract below, the way FatFs goes through its disk I/O layer.  The same
 * core runs in the host tool (platform/posix.c), in the tests (platform/mem.c) and in the
 * UEFI driver (platform/efi_esp.c).  How it is built inside: core/README.md.
 *
 * Conventions: functions return an `int` that is a `enum vhdx_error` (VHDX_OK is 0).
 * Virtual-disk addresses are in logical sectors; file addresses are in bytes.
 */
#ifndef VHDX_H
#define VHDX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VHDX_CORE_VERSION "0.2.0"

/*
 * What a caller does about an error depends on its class, not on the code: the host
 * tool picks its exit status and the firmware its EFI_STATUS from the class alone.
 */
enum vhdx_error_class {
    VHDX_CLASS_NONE,            /* success */
    VHDX_CLASS_IO,              /* the platform failed a read, write, flush or size */
    VHDX_CLASS_NO_MEMORY,       /* an allocation failed or would exceed a bound */
    VHDX_CLASS_NO_SPACE,        /* the file cannot grow any further */
    VHDX_CLASS_NOT_FOUND,       /* a file the image needs (a parent) is not there */
    VHDX_CLASS_READ_ONLY,       /* a write to a read-only image or medium */
    VHDX_CLASS_CORRUPT,         /* the image breaks the specification */
    VHDX_CLASS_UNSUPPORTED,     /* a valid image this core cannot handle */
    VHDX_CLASS_ARGUMENT         /* the caller's mistake */
};

/*
 * The structure an error is about; check mode prints a bounded number of problems per
 * structure (VHDX_PROBLEMS_SHOWN), then a count.
 */
enum vhdx_error_part {
    VHDX_PART_NONE,
    VHDX_PART_HEADER,
    VHDX_PART_LOG,
    VHDX_PART_REGION,
    VHDX_PART_METADATA,
    VHDX_PART_BAT,
    VHDX_PART_COUNT
};

/*
 * Every error the core can report: X(name, class, part, message template).  The one
 * list generates the codes (VHDX_E_name), their classes and the message table.  A
 * template may refer to the details of a diagnosis: %a and %b print them in decimal,
 * %A and %B in hexadecimal, %s prints the text detail.  Messages are about the file;
 * the platform prefixes its name ("disk.vhdx: BAT entry 17 points past ...").
 */
#define VHDX_ERROR_LIST(X)                                                                  \
    X(OK, NONE, NONE, "success")                                                            \
    /* Environment and arguments. */                                                        \
    X(IO, IO, NONE, "I/O error %s at file offset %a")                                        \
    X(GROW_FAILED, IO, NONE, "I/O error growing the file to %a bytes")                        \
    X(NOMEM, NO_MEMORY, NONE, "out of memory (needed %a bytes)")                             \
    X(TOO_BIG, NO_MEMORY, NONE, "%s needs %a bytes of memory, more than the limit of %b")   \
    X(READ_ONLY, READ_ONLY, NONE, "the image is open read-only")                             \
    X(MEDIA_READ_ONLY, READ_ONLY, NONE, "the medium refuses writes (%s at file offset %a)")  \
    X(NO_SPACE, NO_SPACE, NONE, "no space to grow the file to %a bytes")                     \
    X(RANGE, ARGUMENT, NONE, "sectors %a..%b are past the end of the virtual disk")          \
    X(ARGUMENT, ARGUMENT, NONE, "invalid argument: %s")                                      \
    X(NO_PARENT, UNSUPPORTED, NONE,                                                          \
      "a differencing disk opened without its parent cannot be read (%s)")                   \
    X(FAILED_EARLIER, IO, NONE, "an earlier write failed; the image is not written any more") \
    /* File identifier and headers (spec 2.2.1, 2.2.2). */                                  \
    X(NOT_VHDX, CORRUPT, HEADER, "not a VHDX file (no 'vhdxfile' signature)")                \
    X(FILE_TOO_SMALL, CORRUPT, HEADER,                                                       \
      "file is %a bytes, too small for the 1 MiB VHDX header section")                       \
    X(TRUNCATED, CORRUPT, NONE,                                                              \
      "file ends at %a bytes, before data it needs at offset %b (truncated?)")               \
    X(NO_VALID_HEADER, CORRUPT, HEADER, "no valid header (header 1: %s)")                     \
    X(HEADERS_CONFLICT, CORRUPT, HEADER,                                                     \
      "both headers have sequence number %a but different contents")                          \
    X(HEADER_VERSION, UNSUPPORTED, HEADER, "header version is %a; only version 1 is supported") \
    X(LOG_VERSION, UNSUPPORTED, HEADER,                                                      \
      "log version is %a; only version 0 logs can be replayed")                               \
    X(LOG_PLACEMENT, CORRUPT, HEADER,                                                        \
      "log at offset %a length %b is not 1 MiB aligned or lies in the header section")       \
    X(LOG_PAST_EOF, CORRUPT, HEADER,                                                         \
      "log at offset %a length %b extends past the end of the file")                          \
    X(SEQUENCE_EXHAUSTED, UNSUPPORTED, HEADER,                                               \
      "header sequence number %a cannot be incremented")                                      \
    /* Region table (spec 2.2.3). */                                                        \
    X(NO_VALID_REGION_TABLE, CORRUPT, REGION, "no valid region table (copy 1: %s)")           \
    X(REGION_RESERVED, CORRUPT, REGION, "region table entry %a has reserved bits set (%B)")   \
    X(REGION_PLACEMENT, CORRUPT, REGION,                                                     \
      "region %a (offset %b) is not 1 MiB aligned or lies in the header section")            \
    X(REGION_PAST_EOF, CORRUPT, REGION, "region %a (offset %b) extends past the end of the file") \
    X(REGION_OVERLAP, CORRUPT, REGION, "regions %a and %b overlap")                           \
    X(REGION_OVERLAPS_LOG, CORRUPT, REGION, "region %a (offset %b) overlaps the log")         \
    X(REGION_DUPLICATE, CORRUPT, REGION, "region %a repeats the type of region %b")           \
    X(REGION_UNKNOWN_REQUIRED, UNSUPPORTED, REGION,                                          \
      "region %a has an unknown type %s and is marked required")                              \
    X(REGION_MISSING, CORRUPT, REGION, "region table has no %s region")                       \
    /* Metadata region (spec 2.6). */                                                       \
    X(META_TOO_SMALL, CORRUPT, METADATA,                                                     \
      "metadata region is %a bytes, too small for its 64 KiB table")                          \
    X(META_SIGNATURE, CORRUPT, METADATA, "metadata table has no 'metadata' signature")        \
    X(META_COUNT, CORRUPT, METADATA, "metadata table has %a %s; at most %b are allowed") \
    X(META_RESERVED, CORRUPT, METADATA, "metadata table entry %a has reserved bits set (%B)") \
    X(META_ITEM_BOUNDS, CORRUPT, METADATA,                                                   \
      "metadata item %a (offset %b) lies outside the metadata region's item area")           \
    X(META_ITEM_OVERLAP, CORRUPT, METADATA, "metadata items %a and %b overlap")               \
    X(META_DUPLICATE, CORRUPT, METADATA, "metadata item %a repeats item %b")                  \
    X(META_UNKNOWN_REQUIRED, UNSUPPORTED, METADATA,                                          \
      "metadata item %a has an unknown type %s and is marked required")                       \
    X(META_MISSING, CORRUPT, METADATA, "required metadata item %s is missing")                \
    X(META_ITEM_SIZE, CORRUPT, METADATA, "metadata item %s is %a bytes long; %b expected")    \
    X(BLOCK_SIZE, CORRUPT, METADATA,                                                         \
      "block size %a is not a power of two from 1 MiB to 256 MiB")                            \
    X(SECTOR_SIZE, CORRUPT, METADATA, "%s sector size %a is neither 512 nor 4096")            \
    X(VIRTUAL_SIZE, CORRUPT, METADATA,                                                       \
      "virtual disk size %a is zero, over 64 TiB or not a multiple of the %b-byte "          \
      "logical sector")                                                                      \
    X(FILE_PARAMETERS, CORRUPT, METADATA, "file parameters have reserved bits set (%A)")      \
    X(PARENT_LOCATOR, CORRUPT, METADATA, "parent locator: %s (entry %a)")                     \
    /* Block allocation table (spec 2.5). */                                                \
    X(BAT_TOO_SMALL, CORRUPT, BAT, "BAT region is %a bytes, too small for %b entries")        \
    X(BAT_RESERVED, CORRUPT, BAT, "BAT entry %a has reserved bits set (%B)")                  \
    X(BAT_STATE, CORRUPT, BAT, "BAT entry %a has state %b, %s")                               \
    X(BAT_IN_HEADER, CORRUPT, BAT, "BAT entry %a points into the header section")             \
    X(BAT_PAST_EOF, CORRUPT, BAT, "BAT entry %a points past end of file (offset %b)")         \
    X(BAT_OVERLAP, CORRUPT, BAT, "BAT entry %a (offset %b) overlaps %s")                      \
    X(BAT_SHARED, CORRUPT, BAT, "BAT entries %a and %b point at overlapping file space")      \
    X(FILE_TOO_LARGE, UNSUPPORTED, BAT,                                                      \
      "file is %a bytes; blocks can only be validated in files up to %b bytes")              \
    /* Log (spec 2.3). */                                                                   \
    X(LOG_NO_SEQUENCE, CORRUPT, LOG, "the log is dirty but holds no valid log sequence")      \
    X(LOG_TRUNCATED, CORRUPT, LOG,                                                           \
      "file is %a bytes, shorter than the %b bytes the log says were flushed (truncated file)") \
    X(LOG_DESCRIPTOR, CORRUPT, LOG, "log entry %a writes to file offset %b, %s")              \
    X(LOG_FILE_SIZE, CORRUPT, LOG,                                                           \
      "the log would make the file %a bytes long, more than its geometry can use (%b)")      \
    X(LOG_FULL, UNSUPPORTED, LOG, "the log (%a bytes) cannot hold an update of %b bytes")     \
    /* Differencing chains (spec 2.6.2.6). */                                               \
    X(LOCATOR_KEY, CORRUPT, METADATA, "parent locator has no %s")                             \
    X(PARENT_NOT_FOUND, NOT_FOUND, NONE, "parent not found: %s")                              \
    X(PARENT_OPEN, CORRUPT, NONE, "parent %s")                                                \
    X(PARENT_LINKAGE, CORRUPT, NONE,                                                         \
      "parent %s is not the disk this child was made from (its DataWriteGuid does not "     \
      "match parent_linkage)")                                                               \
    X(PARENT_SECTOR_SIZE, CORRUPT, NONE,                                                     \
      "parent has %a-byte logical sectors, this disk %b-byte ones")                           \
    X(PARENT_CYCLE, CORRUPT, NONE, "the chain of parents loops back on itself at %s")         \
    X(CHAIN_TOO_DEEP, UNSUPPORTED, NONE, "the chain has more than %a files")                 \
    X(PARENT_SIZE, CORRUPT, NONE,                                                            \
      "parent's virtual disk is %a bytes, this disk's %b: a child has its parent's size")    \
    X(BITMAP_MISSING, CORRUPT, BAT,                                                          \
      "BAT entry %a is PARTIALLY_PRESENT but chunk %b has no sector bitmap block")          \
    X(CREATE_EXISTS, ARGUMENT, NONE, "the file to create is not empty (%a bytes)")            \
    /* Summary of a check-mode open that found problems. */                                 \
    X(CHECK_FAILED, CORRUPT, NONE, "%a problem(s) found")

#define VHDX_ERROR_ENUM(name, class, part, text) VHDX_E_##name,
enum vhdx_error {
    VHDX_ERROR_LIST(VHDX_ERROR_ENUM)
    VHDX_ERROR_COUNT
};
#undef VHDX_ERROR_ENUM
#define VHDX_OK VHDX_E_OK

/*
 * A diagnosis: an error code plus the details its message template refers to
 * ("%a", "%b" as decimal numbers, "%A", "%B" as hexadecimal, "%s" as text).
 */
struct vhdx_diag {
    enum vhdx_error code;
    uint64_t a;
    uint64_t b;
    const char *s;              /* static text, or NULL to use `text` */
    char text[200];             /* text made for this diagnosis (a GUID, a path) */
};

enum vhdx_log_level {
    VHDX_LOG_ERROR,             /* the operation fails */
    VHDX_LOG_PROBLEM,           /* check mode: a structural problem (vhdx check exits 1) */
    VHDX_LOG_WARNING,           /* recovered: e.g. a damaged copy was ignored */
    VHDX_LOG_INFO,              /* what open did: replayed the log, ... */
    VHDX_LOG_DEBUG
};

/*
 * The platform contract.  The core calls nothing else.  Callbacks return VHDX_OK or an
 * enum vhdx_error whose class says what happened (VHDX_E_IO for a failed device
 * operation, VHDX_E_NO_SPACE when grow cannot extend the file, VHDX_E_MEDIA_READ_ONLY
 * when the medium refuses writes).
 *
 * read/write transfer exactly `length` bytes at byte `offset` of the file; a read
 * that runs past the end of the file is an error.  write never extends the file: the
 * core calls grow first.  flush returns once every completed write is durable.
 */
struct vhdx_platform {
    void *context;
    int (*read)(void *context, uint64_t offset, void *buffer, size_t length);
    int (*write)(void *context, uint64_t offset, const void *buffer, size_t length);
    int (*flush)(void *context);
    int (*size)(void *context, uint64_t *file_size);
    int (*grow)(void *context, uint64_t new_file_size);
    void *(*allocate)(void *context, size_t size);
    void (*release)(void *context, void *memory);
    void (*log)(void *context, enum vhdx_log_level level, const char *message);
    /* 16 bytes of randomness for new GUIDs; needed only for writable opens. */
    int (*random)(void *context, uint8_t bytes[16]);

    /* Optional operations (NULL when the platform has none). */
    /*
     * Make [offset, offset + length) of the file read as zeros (inside the file; the
     * core never asks past its end).  Without it the core writes zeros.
     */
    int (*zero)(void *context, uint64_t offset, uint64_t length);
    /*
     * The bytes [offset, offset + length) are no longer needed: the platform may free
     * their storage (punch a hole, unmap); they may then read as anything.
     */
    int (*discard)(void *context, uint64_t offset, uint64_t length);
    /*
     * Open the file at `path` ('\' separators), read-only unless `writable`, filling
     * `sibling` with its platform: differencing parents.  A path that starts with '\'
     * is from the root of this file's volume; any other is relative to this file's
     * directory ('..' allowed).  VHDX_E_PARENT_NOT_FOUND when there is no such file.
     * The core calls the sibling's `close` when it is done with it.
     */
    int (*open_sibling)(void *context, const char *relative_path, bool writable,
                        struct vhdx_platform *sibling);
    void (*close)(void *context);
    unsigned flags;             /* VHDX_PLATFORM_* */
};

#define VHDX_PLATFORM_READ_ONLY   (1u << 0)  /* the media refuses writes */
#define VHDX_PLATFORM_GROW_ZEROES (1u << 1)  /* bytes added by grow() read as zero */

/* vhdx_open() flags. */
#define VHDX_OPEN_WRITABLE (1u << 0)  /* may write: log replay in place, vhdx_write() */
#define VHDX_OPEN_CHECK    (1u << 1)  /* validate everything, report each problem */
#define VHDX_OPEN_NO_PARENT (1u << 2) /* a differencing disk alone: no reads or writes */
#define VHDX_OPEN_PARENT_WRITABLE (1u << 3) /* with WRITABLE: the parent too (vhdx_merge) */

/* Differencing chains: at most this many files, the child and its parents (as 7-Zip). */
#define VHDX_MAX_CHAIN_FILES 256u

/* Check mode reports this many problems of each structure in full, then a count. */
#define VHDX_PROBLEMS_SHOWN 16u

/*
 * Metadata pages (4 KiB of the BAT or of a sector bitmap) are read on demand into a
 * cache of this many bytes, whatever the size of the disk.  One page maps 512 blocks.
 */
#define VHDX_DEFAULT_CACHE_BYTES (1u << 20)
#define VHDX_MIN_CACHE_BYTES     4096u

struct vhdx_open_options {
    unsigned flags;             /* VHDX_OPEN_* */
    size_t cache_bytes;         /* 0: VHDX_DEFAULT_CACHE_BYTES; rounded down to pages */
};

struct vhdx_guid {
    uint8_t bytes[16];          /* as stored on disk (mixed-endian, spec 1.1) */
};

enum vhdx_disk_type {
    VHDX_TYPE_FIXED,
    VHDX_TYPE_DYNAMIC,
    VHDX_TYPE_DIFFERENCING
};

enum vhdx_log_state {
    VHDX_LOG_WAS_CLEAN,         /* LogGuid was zero at open */
    VHDX_LOG_REPLAYED,          /* replayed into the file and marked clean */
    VHDX_LOG_REPLAYED_IN_MEMORY /* read-only open: replayed into an overlay */
};

struct vhdx_info {
    enum vhdx_disk_type type;
    uint64_t virtual_size;          /* bytes */
    uint32_t block_size;            /* bytes */
    uint32_t logical_sector_size;
    uint32_t physical_sector_size;
    uint64_t file_size;             /* as seen after replay */
    uint64_t used_size;             /* 1 MiB-aligned end of every allocated object; the
                                       file beyond it is free room for new blocks */
    uint64_t room_wanted;           /* bytes of new blocks the disk could still need:
                                       vhdx_reserve(disk, room_wanted) lets every block
                                       be allocated without growing the file later */
    bool read_only;

    unsigned header_slot;           /* 1 or 2: the current header */
    uint64_t header_sequence;
    struct vhdx_guid file_write_guid;
    struct vhdx_guid data_write_guid;
    struct vhdx_guid log_guid;      /* current (zero when the log is empty) */
    struct vhdx_guid virtual_disk_id;

    uint64_t log_offset;
    uint32_t log_length;
    enum vhdx_log_state log_state;
    uint32_t log_entries_replayed;  /* entries of the active sequence at open */
    uint64_t log_sequence_head;     /* SequenceNumber of its head entry */
    struct vhdx_guid replayed_log_guid;

    uint64_t bat_offset;
    uint32_t bat_length;
    uint64_t bat_entries;
    uint64_t metadata_offset;
    uint32_t metadata_length;
    uint32_t chunk_ratio;
    uint64_t blocks_total;
    uint64_t blocks_present;        /* FULLY_PRESENT payload blocks */
    uint64_t blocks_partial;        /* PARTIALLY_PRESENT payload blocks (differencing) */

    uint32_t parent_locator_entries;
    struct vhdx_guid parent_locator_type;
    /* Differencing: how the parent was found, and how many parents lie below. */
    const char *parent_key;         /* "relative_path", ... (NULL: no parent opened) */
    const char *parent_path;        /* the path tried with success, as the platform got it */
    bool parent_linkage2;           /* linked through parent_linkage2, not parent_linkage */
    uint32_t chain_depth;

    /* The metadata cache, and the core's memory (every allocation it made). */
    uint32_t cache_pages;
    uint64_t cache_hits;
    uint64_t cache_misses;
    uint64_t memory_in_use;
    uint64_t memory_peak;
};

struct vhdx_disk;

/*
 * Open the file behind `platform` (copied; it must stay valid until vhdx_close).
 * On failure *disk is NULL and, if `diag` is not NULL, it says why.
 * In VHDX_OPEN_CHECK mode every problem found is logged at VHDX_LOG_PROBLEM and the
 * open fails with VHDX_E_CHECK_FAILED (a = number of problems) if there was any.
 * Nothing is written to the file before the whole image (a dirty log replayed in
 * memory) has been validated.
 */
int vhdx_open(const struct vhdx_platform *platform, unsigned flags,
              struct vhdx_disk **disk, struct vhdx_diag *diag);
int vhdx_open_with(const struct vhdx_platform *platform,
                   const struct vhdx_open_options *options, struct vhdx_disk **disk,
                   struct vhdx_diag *diag);

/* Flush (when writable), mark the log clean, free everything.  NULL is allowed.
 * A failure is described in `diag` if not NULL; the disk is freed either way. */
int vhdx_close(struct vhdx_disk *disk, struct vhdx_diag *diag);

void vhdx_get_info(const struct vhdx_disk *disk, struct vhdx_info *info);

/* The parent of a differencing disk (opened read-only with it), or NULL. */
struct vhdx_disk *vhdx_parent(const struct vhdx_disk *disk);

/*
 * Create a VHDX file (spec 2.1 layout: log at 1 MiB, metadata at 2 MiB, BAT at 3 MiB,
 * blocks after) on `platform`, whose file must be empty and writable.  A fixed disk gets
 * every block (the file grows to the whole disk; zeros).  A differencing child gets a
 * parent locator from `locator` (parent_linkage = the parent's DataWriteGuid, paths).
 */
struct vhdx_locator_entry {
    const char *key;                /* UTF-8 */
    const char *value;
};

struct vhdx_create_options {
    uint64_t virtual_size;          /* bytes, a multiple of the logical sector size */
    uint32_t block_size;            /* 0: 32 MiB (2 MiB for a differencing child) */
    uint32_t logical_sector_size;   /* 512 or 4096 (0: 512) */
    uint32_t physical_sector_size;  /* 512 or 4096 (0: 4096) */
    bool fixed;
    const struct vhdx_locator_entry *locator;   /* non-NULL: a differencing child */
    uint32_t locator_count;
    const char *creator;            /* the file identifier's text (spec 2.2.1), or NULL */
};

int vhdx_create(const struct vhdx_platform *platform, const struct vhdx_create_options *options,
                struct vhdx_diag *diag);

/*
 * Merge a differencing child into its parent (opened with VHDX_OPEN_WRITABLE |
 * VHDX_OPEN_PARENT_WRITABLE): afterwards the parent reads as the child did.  Crash-safe
 * by the spec's order (2.6.2.6.3, note <12>): the child's parent_linkage2 first names the
 * parent's new DataWriteGuid (through the child's log), then the parent takes it, then
 * the child's sectors are copied into the parent.  At every moment the chain reads as the
 * child did.  The child stays a valid child of the result; other children of the parent
 * no longer match it (their parent changed).  `progress` (may be NULL) is told how many
 * of the child's blocks are done.
 */
int vhdx_merge(struct vhdx_disk *child,
               void (*progress)(void *context, uint64_t done, uint64_t total),
               void *context);

/* Parent locator key/value pairs, converted to UTF-8.  VHDX_E_RANGE past the end. */
int vhdx_parent_locator_entry(const struct vhdx_disk *disk, uint32_t index,
                              const char **key, const char **value);

/* Read or write `count` logical sectors starting at `sector`. */
int vhdx_read(struct vhdx_disk *disk, uint64_t sector, uint64_t count, void *buffer);
int vhdx_write(struct vhdx_disk *disk, uint64_t sector, uint64_t count, const void *buffer);

/*
 * Make `count` sectors from `sector` read as zeros.  Whole blocks of a dynamic disk
 * become PAYLOAD_BLOCK_ZERO (their file space is discarded when the platform can);
 * the rest is written with zeros where it holds data.
 */
int vhdx_write_zeroes(struct vhdx_disk *disk, uint64_t sector, uint64_t count);

/*
 * The sectors are no longer needed (TRIM, UNMAP).  Whole blocks of a dynamic disk
 * become PAYLOAD_BLOCK_ZERO like vhdx_write_zeroes; partial blocks are left as they are
 * (allowed: discarded data may read as anything), so nothing is written for them.
 */
int vhdx_discard(struct vhdx_disk *disk, uint64_t sector, uint64_t count);

/*
 * Allocation status, for NBD BLOCK_STATUS and sparse copies: how many sectors from
 * `sector` (at most `count`) share one status, and the status: VHDX_MAP_DATA (stored
 * in the file) or VHDX_MAP_ZERO (reads as zeros, nothing stored).
 */
#define VHDX_MAP_DATA 0u
#define VHDX_MAP_ZERO 1u
int vhdx_map(struct vhdx_disk *disk, uint64_t sector, uint64_t count, uint64_t *run,
             unsigned *status);

/* Make every acknowledged write durable (data first, then the metadata through the log). */
int vhdx_flush(struct vhdx_disk *disk);

/*
 * Were blocks allocated since the last flush?  Their BAT entries live only in memory
 * until vhdx_flush(): a caller whose users never flush (firmware file systems do not
 * call FlushBlocks) can flush right after a write that allocated.
 */
bool vhdx_allocation_pending(const struct vhdx_disk *disk);

/*
 * Grow the file so that `bytes` of room for new blocks follow the allocated data
 * (rounded up to whole blocks).  For platforms that can grow a file only at certain
 * times (firmware: before the disk is served).  VHDX_E_NO_SPACE when it cannot.
 */
int vhdx_reserve(struct vhdx_disk *disk, uint64_t bytes);

/* Details of the last failure of vhdx_read/vhdx_write/vhdx_flush/vhdx_close. */
const struct vhdx_diag *vhdx_last_diag(const struct vhdx_disk *disk);

/* The message template, class and structure of a code, and a diagnosis rendered into
 * `buffer` (always NUL-terminated when size > 0).  Returns the length written. */
const char *vhdx_error_template(enum vhdx_error code);
enum vhdx_error_class vhdx_error_class(enum vhdx_error code);
enum vhdx_error_part vhdx_error_part(enum vhdx_error code);
size_t vhdx_describe(const struct vhdx_diag *diag, char *buffer, size_t size);

/* "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" in lower case, NUL-terminated. */
void vhdx_guid_format(const struct vhdx_guid *guid, char text[39]);
bool vhdx_guid_is_zero(const struct vhdx_guid *guid);

/* CRC-32C (Castagnoli) as VHDX uses it: vhdx_crc32c(0, data, n) is the checksum. */
uint32_t vhdx_crc32c(uint32_t crc, const void *data, size_t length);

/* BAT geometry (spec 2.4, 2.5), exposed for tests and tools. */
uint32_t vhdx_chunk_ratio(uint32_t block_size, uint32_t logical_sector_size);
uint64_t vhdx_bat_payload_index(uint64_t block, uint32_t chunk_ratio);
uint64_t vhdx_bat_bitmap_index(uint64_t chunk, uint32_t chunk_ratio);
uint64_t vhdx_bat_entry_count(uint64_t virtual_size, uint32_t block_size,
                              uint32_t logical_sector_size, bool differencing);

#endif /* VHDX_H */

/*
 * vhdx.h - the one public header of the VHDX core.
 *
 * The core reads, writes and repairs VHDX files (Microsoft MS-VHDX) without libc or
 * firmware headers: every byte of I/O, every allocation and every message goes through
 * the platform contract below, the way FatFs goes through its disk I/O layer.  The same
 * core runs in the host tool (platform/posix.c) and in the UEFI driver (platform/efi_*.c).
 *
 * Conventions: functions return an `int` that is a `enum vhdx_error` (VHDX_OK is 0).
 * Virtual-disk addresses are in logical sectors; file addresses are in bytes.
 */
#ifndef VHDX_H
#define VHDX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VHDX_CORE_VERSION "0.1.0"

/*
 * Every error and problem the core can report.  Each has a message template in
 * core/errors.c; vhdx_describe() fills in the details of a struct vhdx_diag.
 */
enum vhdx_error {
    VHDX_OK = 0,

    /* Environment and arguments. */
    VHDX_E_IO,                  /* the platform failed a read, write, flush or size */
    VHDX_E_NOMEM,
    VHDX_E_READ_ONLY,           /* write to an image opened read-only */
    VHDX_E_NO_SPACE,            /* the file cannot grow any further */
    VHDX_E_RANGE,               /* request past the end of the virtual disk */
    VHDX_E_ARGUMENT,            /* bad argument from the caller */
    VHDX_E_DIFFERENCING,        /* differencing disks are not supported yet */
    VHDX_E_FAILED_EARLIER,      /* a write failed mid-way; the disk refuses further writes */

    /* File identifier and headers (spec 2.2.1, 2.2.2). */
    VHDX_E_NOT_VHDX,
    VHDX_E_FILE_TOO_SMALL,
    VHDX_E_TRUNCATED,
    VHDX_E_NO_VALID_HEADER,
    VHDX_E_HEADERS_CONFLICT,
    VHDX_E_HEADER_VERSION,
    VHDX_E_LOG_VERSION,
    VHDX_E_LOG_PLACEMENT,
    VHDX_E_LOG_PAST_EOF,
    VHDX_E_SEQUENCE_EXHAUSTED,

    /* Region table (spec 2.2.3). */
    VHDX_E_NO_VALID_REGION_TABLE,
    VHDX_E_REGION_COUNT,
    VHDX_E_REGION_RESERVED,
    VHDX_E_REGION_PLACEMENT,
    VHDX_E_REGION_PAST_EOF,
    VHDX_E_REGION_OVERLAP,
    VHDX_E_REGION_OVERLAPS_LOG,
    VHDX_E_REGION_DUPLICATE,
    VHDX_E_REGION_UNKNOWN_REQUIRED,
    VHDX_E_REGION_MISSING,

    /* Metadata region (spec 2.6). */
    VHDX_E_META_SIGNATURE,
    VHDX_E_META_COUNT,
    VHDX_E_META_RESERVED,
    VHDX_E_META_ITEM_BOUNDS,
    VHDX_E_META_ITEM_OVERLAP,
    VHDX_E_META_DUPLICATE,
    VHDX_E_META_UNKNOWN_REQUIRED,
    VHDX_E_META_MISSING,
    VHDX_E_META_ITEM_SIZE,
    VHDX_E_BLOCK_SIZE,
    VHDX_E_SECTOR_SIZE,
    VHDX_E_VIRTUAL_SIZE,
    VHDX_E_FILE_PARAMETERS,
    VHDX_E_PARENT_LOCATOR,

    /* Block allocation table (spec 2.5). */
    VHDX_E_BAT_TOO_SMALL,
    VHDX_E_BAT_RESERVED,
    VHDX_E_BAT_STATE,
    VHDX_E_BAT_IN_HEADER,
    VHDX_E_BAT_PAST_EOF,
    VHDX_E_BAT_OVERLAP,
    VHDX_E_BAT_SHARED,

    /* Log (spec 2.3). */
    VHDX_E_LOG_NO_SEQUENCE,
    VHDX_E_LOG_TRUNCATED,
    VHDX_E_LOG_DESCRIPTOR,
    VHDX_E_LOG_FULL,

    /* Summary of a check-mode open that found problems. */
    VHDX_E_CHECK_FAILED,

    VHDX_ERROR_COUNT
};

/*
 * A diagnosis: an error code plus the details its message template refers to
 * ("%a", "%b" as decimal numbers, "%A", "%B" as hexadecimal, "%s" as text).
 */
struct vhdx_diag {
    enum vhdx_error code;
    uint64_t a;
    uint64_t b;
    const char *s;              /* static text, or NULL to use `text` */
    char text[40];              /* text made for this diagnosis (e.g. a GUID) */
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
 * enum vhdx_error (VHDX_E_IO for a failed device operation, VHDX_E_NO_SPACE when grow
 * cannot extend the file, VHDX_E_READ_ONLY when the media refuses writes).
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
    /*
     * Optional (may be NULL): open a file named by a path relative to this file's
     * directory ('\' separators, '..' allowed), filling `sibling` with its platform.
     * Reserved for differencing parents.
     */
    int (*open_sibling)(void *context, const char *relative_path, bool writable,
                        struct vhdx_platform *sibling);
    unsigned flags;             /* VHDX_PLATFORM_* */
};

#define VHDX_PLATFORM_READ_ONLY   (1u << 0)  /* the media refuses writes */
#define VHDX_PLATFORM_GROW_ZEROES (1u << 1)  /* bytes added by grow() read as zero */

/* vhdx_open() flags. */
#define VHDX_OPEN_WRITABLE (1u << 0)  /* may write: log replay in place, vhdx_write() */
#define VHDX_OPEN_CHECK    (1u << 1)  /* validate everything, report each problem */

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

    uint32_t parent_locator_entries;
    struct vhdx_guid parent_locator_type;
};

struct vhdx_disk;

/*
 * Open the file behind `platform` (copied; it must stay valid until vhdx_close).
 * On failure *disk is NULL and, if `diag` is not NULL, it says why.
 * In VHDX_OPEN_CHECK mode every problem found is logged at VHDX_LOG_PROBLEM and the
 * open fails with VHDX_E_CHECK_FAILED (a = number of problems) if there was any.
 */
int vhdx_open(const struct vhdx_platform *platform, unsigned flags,
              struct vhdx_disk **disk, struct vhdx_diag *diag);

/* Flush (when writable), mark the log clean, free everything.  NULL is allowed.
 * A failure is described in `diag` if not NULL; the disk is freed either way. */
int vhdx_close(struct vhdx_disk *disk, struct vhdx_diag *diag);

void vhdx_get_info(const struct vhdx_disk *disk, struct vhdx_info *info);

/* Parent locator key/value pairs, converted to UTF-8.  VHDX_E_RANGE past the end. */
int vhdx_parent_locator_entry(const struct vhdx_disk *disk, uint32_t index,
                              const char **key, const char **value);

/* Read or write `count` logical sectors starting at `sector`. */
int vhdx_read(struct vhdx_disk *disk, uint64_t sector, uint64_t count, void *buffer);
int vhdx_write(struct vhdx_disk *disk, uint64_t sector, uint64_t count, const void *buffer);

/* Make every acknowledged write durable (data first, then the metadata through the log). */
int vhdx_flush(struct vhdx_disk *disk);

/*
 * Were blocks allocated since the last flush?  Their BAT entries live only in memory
 * until vhdx_flush(): a caller whose users never flush (firmware file systems do not
 * call FlushBlocks) can flush right after a write that allocated.
 */
bool vhdx_allocation_pending(const struct vhdx_disk *disk);

/* Details of the last failure of vhdx_read/vhdx_write/vhdx_flush/vhdx_close. */
const struct vhdx_diag *vhdx_last_diag(const struct vhdx_disk *disk);

/* The message template of a code, and a diagnosis rendered into `buffer` (always
 * NUL-terminated when size > 0).  Returns the length written. */
const char *vhdx_error_template(enum vhdx_error code);
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

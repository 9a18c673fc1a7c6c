/*
 * vhdx_int.h - declarations shared by the core's source files (not installed).
 *
 * Layout constants and field offsets come from MS-VHDX as digested in
 * ../shared/docs/vhdx-format.md; section numbers below ("spec 2.2.2") are MS-VHDX's.
 */
#ifndef VHDX_INT_H
#define VHDX_INT_H

#include "vhdx.h"

#define KIB 1024u
#define MIB (1024u * 1024u)

/* File layout (spec 2.2). */
#define HEADER_SECTION_SIZE   ((uint64_t)MIB)
#define FILE_ID_OFFSET        0u
#define HEADER_OFFSET_1       (64u * KIB)
#define HEADER_OFFSET_2       (128u * KIB)
#define HEADER_SIZE           4096u
#define REGION_TABLE_OFFSET_1 (192u * KIB)
#define REGION_TABLE_OFFSET_2 (256u * KIB)
#define REGION_TABLE_SIZE     (64u * KIB)
#define REGION_MAX_ENTRIES    2047u
#define METADATA_TABLE_SIZE   (64u * KIB)
#define METADATA_MAX_ENTRIES  2047u
#define METADATA_ITEM_MAX     MIB
#define LOG_SECTOR_SIZE       4096u
#define SECTOR_BITMAP_SIZE    MIB
#define MAX_VIRTUAL_SIZE      (64ull << 40)   /* 64 TiB */
#define MIN_BLOCK_SIZE        MIB
#define MAX_BLOCK_SIZE        (256u * MIB)

/* BAT entries (spec 2.5.1). */
#define BAT_STATE_MASK    0x7ull
#define BAT_RESERVED_MASK 0xFFFF8ull
#define BAT_OFFSET_MASK   0xFFFFFFFFFFF00000ull

enum payload_state {
    PAYLOAD_NOT_PRESENT = 0,
    PAYLOAD_UNDEFINED = 1,
    PAYLOAD_ZERO = 2,
    PAYLOAD_UNMAPPED = 3,
    PAYLOAD_UNMAPPED_V095 = 5,        /* draft value; read as zeros like QEMU */
    PAYLOAD_FULLY_PRESENT = 6,
    PAYLOAD_PARTIALLY_PRESENT = 7
};

enum bitmap_state {
    SB_NOT_PRESENT = 0,
    SB_PRESENT = 6
};

/* Known GUIDs, in on-disk byte order (spec 2.2.3.2, 2.6.2). */
extern const struct vhdx_guid GUID_BAT_REGION;
extern const struct vhdx_guid GUID_METADATA_REGION;
extern const struct vhdx_guid GUID_FILE_PARAMETERS;
extern const struct vhdx_guid GUID_VIRTUAL_DISK_SIZE;
extern const struct vhdx_guid GUID_VIRTUAL_DISK_ID;
extern const struct vhdx_guid GUID_LOGICAL_SECTOR_SIZE;
extern const struct vhdx_guid GUID_PHYSICAL_SECTOR_SIZE;
extern const struct vhdx_guid GUID_PARENT_LOCATOR;

/* The fields of a header (spec 2.2.2) the core uses; reserved bytes are written as 0. */
struct vhdx_header {
    uint64_t sequence;
    struct vhdx_guid file_write_guid;
    struct vhdx_guid data_write_guid;
    struct vhdx_guid log_guid;
    uint16_t log_version;
    uint16_t version;
    uint32_t log_length;
    uint64_t log_offset;
};

struct vhdx_region {
    struct vhdx_guid guid;
    uint64_t offset;
    uint32_t length;
    bool required;
};

/* A replayed log write kept in memory for a read-only open (data NULL = zeros). */
struct overlay_run {
    uint64_t offset;
    uint64_t length;
    const uint8_t *data;
};

struct parent_locator_pair {
    char *key;                      /* UTF-8, NUL-terminated */
    char *value;
};

struct vhdx_disk {
    struct vhdx_platform platform;
    unsigned open_flags;
    bool writable;
    uint64_t file_size;             /* the file as the core sees it (overlay included) */
    uint64_t real_file_size;        /* what the platform reports */
    struct vhdx_diag diag;          /* last failure */
    uint32_t problems;              /* check mode: problems reported so far */

    /* Headers. */
    struct vhdx_header header;      /* the current header */
    unsigned header_slot;           /* 1 or 2 */
    bool file_guid_changed;         /* FileWriteGuid renewed this session */
    bool data_guid_changed;         /* DataWriteGuid renewed this session */

    /* Region table. */
    struct vhdx_region *regions;
    uint32_t region_count;
    uint64_t bat_offset;
    uint32_t bat_length;
    uint64_t metadata_offset;
    uint32_t metadata_length;

    /* Metadata items. */
    uint32_t block_size;
    unsigned block_shift;
    uint32_t logical_sector_size;
    unsigned sector_shift;
    uint32_t physical_sector_size;
    uint64_t virtual_size;
    bool leave_blocks_allocated;
    bool has_parent;
    struct vhdx_guid virtual_disk_id;
    struct vhdx_guid locator_type;
    struct parent_locator_pair *locator;
    uint32_t locator_count;

    /* BAT: whole 4 KiB sectors of it, so a sector can be logged as it stands. */
    uint64_t *bat;
    uint64_t bat_entries;           /* entries the geometry requires */
    uint64_t bat_loaded;            /* entries held in memory (rounded up to a sector) */
    uint32_t chunk_ratio;
    uint64_t payload_blocks;

    /* Log replay at open. */
    enum vhdx_log_state log_state;
    uint32_t log_entries_replayed;
    uint64_t log_head_sequence;
    struct vhdx_guid replayed_log_guid;

    /* In-memory replay (read-only open of a dirty image). */
    uint8_t *overlay_memory;
    struct overlay_run *overlay;
    uint32_t overlay_count;
    uint64_t overlay_low, overlay_high;

    /* Write state (write.c, log.c). */
    bool write_failed;              /* a write path failed half-way: refuse more */
    uint8_t *bat_dirty;             /* one bit per BAT sector changed since the last log */
    uint64_t bat_sectors;
    bool data_unflushed;            /* payload written since the last flush */
    bool inplace_unflushed;         /* metadata applied in place, not yet flushed */
    uint64_t alloc_end;             /* 1 MiB-aligned end of every allocated object */
    uint64_t known_zero_from;       /* file bytes from here on read as zero */
    bool log_active;                /* header LogGuid set by this session */
    struct vhdx_guid session_log_guid;
    uint32_t log_head_position;     /* where the last written entry starts */
    uint32_t log_head_length;       /* its length (0: no entry yet this session) */
    uint64_t log_next_sequence;
    uint8_t *log_buffer;            /* one log entry being built (<= log length) */
    uint8_t *zero_buffer;           /* a chunk of zeros for filling new blocks */
};

/* --- util.c: bytes, memory and GUIDs ----------------------------------------------- */
uint16_t get_le16(const uint8_t *p);
uint32_t get_le32(const uint8_t *p);
uint64_t get_le64(const uint8_t *p);
void put_le16(uint8_t *p, uint16_t v);
void put_le32(uint8_t *p, uint32_t v);
void put_le64(uint8_t *p, uint64_t v);
void mem_copy(void *dst, const void *src, size_t n);
void mem_zero(void *dst, size_t n);
bool mem_equal(const void *a, const void *b, size_t n);
bool mem_is_zero(const void *p, size_t n);
bool guid_equal(const struct vhdx_guid *a, const struct vhdx_guid *b);
void guid_read(struct vhdx_guid *g, const uint8_t *p);
bool add_overflows(uint64_t a, uint64_t b, uint64_t *sum);
bool ranges_overlap(uint64_t a_start, uint64_t a_len, uint64_t b_start, uint64_t b_len);
uint64_t align_up_mib(uint64_t value);
bool is_power_of_two(uint64_t v);
unsigned log2_u64(uint64_t v);

/* --- crc32c.c --------------------------------------------------------------------- */
/* CRC of a structure whose checksum field (bytes 4..7) counts as zero. */
uint32_t crc_with_zero_field(const uint8_t *p, size_t length);

/* --- errors.c: reporting ----------------------------------------------------------- */
/* Record a fatal error in disk->diag (if disk) and return the code. */
int fail(struct vhdx_disk *disk, enum vhdx_error code, uint64_t a, uint64_t b,
         const char *s);
/*
 * A structural problem.  Outside check mode it is fatal (like fail()).  In check mode
 * it is logged and counted, and VHDX_OK is returned so validation goes on - unless
 * `fatal` says the open cannot continue past it.
 */
int problem(struct vhdx_disk *disk, bool fatal, enum vhdx_error code, uint64_t a,
            uint64_t b, const char *s);
/* problem() whose %s detail is a GUID. */
int problem_guid(struct vhdx_disk *disk, bool fatal, enum vhdx_error code, uint64_t a,
                 const struct vhdx_guid *guid);
/*
 * Something a reader can live with but a checker must report (a damaged spare copy, a
 * reserved bit): a warning normally, a non-fatal problem in check mode.
 */
void quirk(struct vhdx_disk *disk, enum vhdx_error code, uint64_t a, uint64_t b,
           const char *s);
void quirk_text(struct vhdx_disk *disk, const char *text, uint64_t a, uint64_t b,
                const char *s);
/* Log a message at `level` through the platform (formatted like a diag). */
void note(struct vhdx_disk *disk, enum vhdx_log_level level, enum vhdx_error code,
          uint64_t a, uint64_t b, const char *s);
void note_text(struct vhdx_disk *disk, enum vhdx_log_level level, const char *text,
               uint64_t a, uint64_t b, const char *s);
size_t format_message(char *out, size_t size, const char *template, uint64_t a,
                      uint64_t b, const char *s);

/* --- io.c: file access through the platform (and the replay overlay) --------------- */
void *core_alloc(struct vhdx_disk *disk, size_t size);   /* zeroed; NULL sets diag */
void core_free(struct vhdx_disk *disk, void *p);
int file_read(struct vhdx_disk *disk, uint64_t offset, void *buf, size_t len);
int file_write(struct vhdx_disk *disk, uint64_t offset, const void *buf, size_t len);
int file_flush(struct vhdx_disk *disk);
int file_grow(struct vhdx_disk *disk, uint64_t new_size);
int file_random_guid(struct vhdx_disk *disk, struct vhdx_guid *guid);

/* --- header.c ---------------------------------------------------------------------- */
int header_load(struct vhdx_disk *disk);
/* Write a new header (twice, spec 2.2.2.1) with fresh GUIDs as asked and this LogGuid. */
int header_update(struct vhdx_disk *disk, bool new_data_guid,
                  const struct vhdx_guid *log_guid);

/* --- region.c, metadata.c, bat.c --------------------------------------------------- */
int region_table_load(struct vhdx_disk *disk);
int metadata_load(struct vhdx_disk *disk);
int bat_load(struct vhdx_disk *disk);

/* --- log.c ------------------------------------------------------------------------- */
int log_replay(struct vhdx_disk *disk);
bool overlay_covers(const struct vhdx_disk *disk, uint64_t offset, uint64_t len);
void overlay_apply(const struct vhdx_disk *disk, uint64_t offset, uint8_t *buf, size_t len);
/* Write the dirty BAT sectors through the log (write-ahead), then in place. */
int log_commit_bat(struct vhdx_disk *disk);
/* At close: make in-place metadata durable and mark the log empty. */
int log_close(struct vhdx_disk *disk);

/* --- read.c ----------------------------------------------------------------------- */
/* Validate a request: buffer, sector range, disk type. */
int check_range(struct vhdx_disk *disk, uint64_t sector, uint64_t count, const void *buffer);

/* A request cut at block boundaries: each step is one piece inside one block. */
struct block_walk {
    uint64_t position, remaining;   /* virtual bytes */
    uint64_t block, in_block, length;
    uint64_t entry;                 /* the block's BAT entry */
};
void block_walk_start(const struct vhdx_disk *disk, struct block_walk *walk, uint64_t sector,
                      uint64_t count);
bool block_walk_next(const struct vhdx_disk *disk, struct block_walk *walk);

/* Pieces contiguous both in the file and in the caller's buffer, issued as one platform
 * read or write (a 1 MiB read inside a block is one read, not 2048). */
struct io_run {
    uint64_t file_offset;
    uint8_t *buffer;
    size_t length;
};
int io_run_add(struct vhdx_disk *disk, struct io_run *run, bool write, uint64_t file_offset,
               uint8_t *buffer, uint64_t length);
int io_run_finish(struct vhdx_disk *disk, struct io_run *run, bool write);

/* --- write.c ----------------------------------------------------------------------- */
int write_prepare(struct vhdx_disk *disk);
int write_zeros(struct vhdx_disk *disk, uint64_t offset, uint64_t length);

#endif /* VHDX_INT_H */

/*
 * Freestanding read-only FAT12/16/32 reader and file mapper.
 *
 * Why this exists: the UEFI driver must serve block I/O for a .vhdx file that lives on
 * the EFI System Partition, but it cannot go through EFI_FILE_PROTOCOL while doing so
 * (the firmware FAT driver holds a global lock and re-entering it leaves the TPL
 * raised).  So, once at open time, we find the file ourselves and turn its cluster chain
 * into a short list of byte extents on the partition; from then on every request is a
 * binary search over those extents plus a Block I/O read.
 *
 * Usage:
 *     struct fat_volume *vol = <caller memory, sizeof(struct fat_volume) ~ 8.3 KiB>;
 *     fat_mount(vol, read_cb, ctx, partition_bytes);
 *     struct fat_file f;
 *     fat_lookup(vol, "\\EFI\\disk.vhdx", &f);
 *     fat_map(vol, &f, NULL, 0, &n);           (count)
 *     fat_map(vol, &f, extents, n, &n);        (fill a caller array of n extents)
 *     fat_extent_lookup(extents, n, file_offset, &volume_offset, &contiguous);
 *
 * Memory: nothing is allocated.  All state lives in the caller's struct fat_volume,
 * which embeds two FAT_CACHE_BYTES windows (one for FAT sectors, one for directory
 * entries), so the FAT of a large volume is never read whole.  The functions use a
 * little over 1 KiB of stack at most (a long file name being matched).  Extent arrays
 * are the caller's: a file needs at most ceil(size / bytes_per_cluster) extents, 24
 * bytes each, and usually just a handful.
 *
 * Reads: every call to the read callback is for a whole number of sectors of the
 * volume at a sector-aligned offset, except the very first one (512 bytes at offset 0,
 * to read the boot sector before the sector size is known).  Reads never go past the
 * end of the volume.  Buffers handed to the callback have no particular alignment (a
 * Block I/O backend with IoAlign > 1 must bounce).  The struct is not thread safe.
 *
 * Hostile volumes: every loop is bounded (cluster chains by the volume's cluster count
 * and a cycle detector, directories by FAT_MAX_DIR_ENTRIES), every cluster number is
 * range-checked before use, and the boot sector is validated before anything else is
 * read.  Errors are reported, never crashed on.
 */
#ifndef VHDX_EFI_FAT_H
#define VHDX_EFI_FAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum fat_error {
    FAT_OK = 0,
    FAT_E_IO,               /* the read callback failed, or a read fell outside the volume */
    FAT_E_INVALID_ARG,      /* NULL pointer or similar caller mistake */
    FAT_E_NOT_FAT,          /* boot sector is not a valid FAT12/16/32 BPB; see vol->detail */
    FAT_E_VOLUME_TOO_BIG,   /* BPB says the volume is larger than the partition */
    FAT_E_BAD_PATH,         /* path is not UTF-8, or a name is longer than 255 characters */
    FAT_E_NOT_FOUND,        /* a path component does not exist */
    FAT_E_NOT_A_DIR,        /* a path component before the last one is a file */
    FAT_E_NOT_A_FILE,       /* asked to map or read a directory */
    FAT_E_CORRUPT_CHAIN,    /* a cluster chain points to a free, bad or out-of-range cluster */
    FAT_E_CHAIN_LOOP,       /* a cluster chain loops (or is longer than the volume) */
    FAT_E_CHAIN_SHORT,      /* the file size is larger than its cluster chain */
    FAT_E_DIR_TOO_LARGE,    /* a directory has more than FAT_MAX_DIR_ENTRIES entries */
    FAT_E_BUFFER_TOO_SMALL, /* caller's extent array cannot hold all extents */
    FAT_E_FILE_TOO_LARGE,   /* file does not fit in the caller's buffer */
};

/* Short English description, never NULL (unknown codes give "unknown FAT error"). */
const char *fat_strerror(enum fat_error err);

/*
 * Reads len bytes of the volume (the partition: offset 0 is the boot sector) into buf.
 * Returns 0 on success; anything else is reported as FAT_E_IO.  A short read is a failure.
 */
typedef int (*fat_read_fn)(void *ctx, uint64_t byte_offset, void *buf, uint32_t len);

enum fat_type { FAT_TYPE_12 = 12, FAT_TYPE_16 = 16, FAT_TYPE_32 = 32 };

/* Directory entry attribute bits (DIR_Attr). */
#define FAT_ATTR_READ_ONLY 0x01u
#define FAT_ATTR_HIDDEN    0x02u
#define FAT_ATTR_SYSTEM    0x04u
#define FAT_ATTR_VOLUME_ID 0x08u
#define FAT_ATTR_DIRECTORY 0x10u
#define FAT_ATTR_ARCHIVE   0x20u

/* Size of each of the two read caches inside struct fat_volume; the largest sector size. */
#define FAT_CACHE_BYTES 4096u
/* The FAT spec limits a directory to 65536 32-byte entries (2 MiB). */
#define FAT_MAX_DIR_ENTRIES 65536u

/* A window of the volume: data[0..length) holds volume bytes [base, base + length). */
struct fat_cache {
    uint64_t base;
    uint32_t length; /* 0 = empty */
    uint8_t data[FAT_CACHE_BYTES];
};

/*
 * A mounted volume.  Everything is filled in by fat_mount; treat it as read-only
 * afterwards (the caches change on every call, so one volume per thread).
 */
struct fat_volume {
    fat_read_fn read;
    void *read_ctx;

    enum fat_type type;
    uint32_t bytes_per_sector;
    uint32_t bytes_per_cluster;
    uint32_t cluster_count;    /* valid data clusters are 2 .. cluster_count + 1 */
    uint32_t root_cluster;     /* FAT32: first cluster of the root directory; else 0 */
    uint32_t root_entry_count; /* FAT12/16: size of the fixed root directory; else 0 */
    uint64_t fat_offset;       /* byte offset of the FAT copy we read (the active one) */
    uint64_t fat_bytes;        /* size of one FAT copy */
    uint64_t root_dir_offset;  /* FAT12/16: byte offset of the fixed root directory */
    uint64_t data_offset;      /* byte offset of cluster 2 */
    uint64_t volume_bytes;     /* total sectors * bytes per sector */

    /* When fat_mount returns FAT_E_NOT_FAT: which check failed (static string). */
    const char *detail;

    struct fat_cache fat_cache; /* FAT sectors, for walking cluster chains */
    struct fat_cache dir_cache; /* directory entries, and the last sector of small reads */
};

/* What a lookup found: a file or directory. */
struct fat_file {
    uint64_t entry_offset;  /* volume byte offset of its 32-byte short (8.3) directory
                               entry; 0 for the root directory, which has none */
    uint32_t first_cluster; /* 0 for an empty file and for the FAT12/16 root directory */
    uint32_t size;          /* bytes; 0 for directories */
    uint8_t attributes;     /* FAT_ATTR_* */
    bool is_directory;
};

/* A run of the file that is contiguous on the volume.  All values in bytes. */
struct fat_extent {
    uint64_t file_offset;
    uint64_t volume_offset;
    uint64_t length;
};

/*
 * Reads and validates the boot sector.  partition_bytes is the size of the partition
 * the volume lives in, or 0 if unknown; when given, a volume claiming to be larger is
 * refused (FAT_E_VOLUME_TOO_BIG).  FAT type is decided by cluster count as the Microsoft
 * FAT specification says (< 4085 FAT12, < 65525 FAT16, else FAT32), and the BPB must
 * agree with it (as the EDK2 FAT driver requires).  After a failure the volume must not
 * be used; only vol->detail is meaningful.
 */
enum fat_error fat_mount(struct fat_volume *vol, fat_read_fn read, void *read_ctx,
                         uint64_t partition_bytes);

/*
 * Finds a file or directory.  path is NUL-terminated UTF-8; '\' and '/' both separate
 * components, a leading separator is optional, empty components and "." are ignored
 * ("" or "\" is the root directory).  Names match case-insensitively (ASCII, Latin-1 and
 * some other alphabets) against long (VFAT) names and against 8.3 short names.
 */
enum fat_error fat_lookup(struct fat_volume *vol, const char *path, struct fat_file *out);

/*
 * Maps a file's data to extents on the volume, covering exactly [0, file->size), with
 * adjacent clusters merged (so consecutive extents are never contiguous on the volume).
 * The whole cluster chain is walked and checked, including any clusters past the end of
 * the data, which are otherwise ignored.
 *
 * *extent_count is always set to the number of extents the file needs (when the chain is
 * valid).  With extents == NULL only counting is done.  Otherwise up to capacity
 * extents are stored, and FAT_E_BUFFER_TOO_SMALL is returned if there are more.
 * A file of size 0 has 0 extents.
 */
enum fat_error fat_map(struct fat_volume *vol, const struct fat_file *file,
                       struct fat_extent *extents, uint32_t capacity, uint32_t *extent_count);

/*
 * Translates a file offset using extents from fat_map (binary search, O(log count)).
 * On success returns true and gives the volume offset and how many bytes from there on
 * are contiguous on the volume (up to the end of the extent).  Returns false if
 * file_offset is at or past the end of the file.
 */
bool fat_extent_lookup(const struct fat_extent *extents, uint32_t count, uint64_t file_offset,
                       uint64_t *volume_offset, uint64_t *contiguous_bytes);

/*
 * Reads a whole file (e.g. a configuration file) into buf.  Fails with
 * FAT_E_FILE_TOO_LARGE if file->size > capacity; reads exactly file->size bytes.
 */
enum fat_error fat_read_file(struct fat_volume *vol, const struct fat_file *file, void *buf,
                             uint32_t capacity);

#endif

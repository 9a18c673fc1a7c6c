/*
 * efi_esp.h - the VHDX platform contract over a file on the EFI System Partition.
 *
 * uefi-notes.md: a Block I/O driver must never reach its backing file through
 * EFI_FILE_PROTOCOL while it serves a request (the firmware FAT driver would be entered
 * twice and leave the TPL raised).  So the file is found and its cluster chain mapped
 * to byte extents of the partition once, with platform/fat.c reading the partition
 * directly, and from then on every read and write of the file is an extent lookup plus
 * a call to the partition's own Block I/O (aligned requests, zero copy) or Disk I/O
 * (the rest: unaligned offsets, lengths or buffers).
 *
 * The file grows only while it is "growable" (efi_esp_file.growable): at mount, before
 * the disk is served, grow() extends it through EFI_FILE_PROTOCOL (the firmware FAT
 * driver zero-fills the new clusters) and maps it again.  Once the disk is served, grow()
 * only says whether a size fits in what was mapped.
 *
 * Differencing parents: open_sibling maps another file of the same ESP, read-only (the
 * path relative to this file's directory, or from the ESP's root when it starts with
 * '\'); close unmaps it and frees it.
 */
#ifndef VHDX_PLATFORM_EFI_ESP_H
#define VHDX_PLATFORM_EFI_ESP_H

#include <efi.h>
#include <stdbool.h>
#include <stdint.h>

#include "fat.h"
#include "vhdx.h"

/* The partition (or whole medium) holding the FAT file system and the .vhdx files. */
struct efi_esp {
    EFI_HANDLE handle;
    EFI_BLOCK_IO_PROTOCOL *block_io;
    EFI_DISK_IO_PROTOCOL *disk_io;
    EFI_DEVICE_PATH *device_path;
    uint32_t media_id;              /* at init: a changed medium fails every request */
    uint32_t block_size;
    uint32_t io_align;              /* 1 when the device has no requirement */
    uint64_t size;                  /* bytes */
    bool read_only;                 /* the medium refuses writes */
    /* The firmware's FAT driver on the partition: reading files, changing their size and
     * attributes (never while a disk is served).  NULL when there is none. */
    EFI_SIMPLE_FILE_SYSTEM_PROTOCOL *file_system;
};

/* Paths on the ESP: UTF-8, '\' separators, NUL included. */
#define EFI_ESP_PATH_MAX 256

/* One mapped file. */
struct efi_esp_file {
    const struct efi_esp *esp;
    const char *name;               /* for messages: "vhdx: NAME: ..." */
    struct fat_extent *extents;     /* pool memory, from efi_esp_map */
    uint32_t extent_count;
    uint64_t size;                  /* bytes mapped: the file's size */
    uint64_t entry_offset;          /* of its directory entry: identifies the file... */
    uint32_t first_cluster;         /* ...as does its first cluster */
    uint8_t attributes;             /* FAT_ATTR_* */

    bool read_only;                 /* refuse writes (VHDX_PLATFORM_READ_ONLY) */
    bool verbose;                   /* pass the core's info messages on */
    bool growable;                  /* grow() may extend the file (not while served) */
    /* A parent opened through open_sibling: the file of the chain's child, whose
     * boot_services_gone and verbose settings it follows (NULL for the child). */
    struct efi_esp_file *child;
    /* The child: its parents as they were opened (nearest first), while they are. */
    struct efi_esp_file *parents;
    struct efi_esp_file *next_parent;
    /*
     * After ExitBootServices has begun, a last flush and close must not change the
     * memory map: allocate() then serves only from exit_memory (set aside when the file
     * is mapped, enough for the header update that marks the log clean) and release()
     * does nothing.
     */
    bool boot_services_gone;
    uint8_t *exit_memory;
    size_t exit_memory_used;
    uint64_t random_counter;
};

/* Bytes set aside per file for allocations after ExitBootServices began. */
#define EFI_ESP_EXIT_MEMORY (16u * 1024u)

/* Find the Block I/O and Disk I/O protocols of the partition `handle`. */
EFI_STATUS efi_esp_init(struct efi_esp *esp, EFI_HANDLE handle);

/*
 * Look `path` (UTF-8, '\' separators) up on the ESP and map its clusters; `file` is
 * cleared first (set name and flags afterwards).  On failure *detail may name the
 * check a non-FAT boot sector failed (static text) or stays NULL.
 */
enum fat_error efi_esp_map(struct efi_esp_file *file, const struct efi_esp *esp,
                           const char *path, const char **detail);

/* Look `path` up without mapping it: what a fat_lookup says (`found`). */
enum fat_error efi_esp_lookup(const struct efi_esp *esp, const char *path,
                              struct fat_file *found, const char **detail);

/*
 * Does the medium take writes?  The first sector of the mapped file is read and written
 * back unchanged (harmless, even if the power fails in between): a medium the firmware
 * reports writable may refuse every write (a read-only SCSI disk in OVMF answers
 * EFI_DEVICE_ERROR), and a disk mounted writable on it would fail every write.
 */
EFI_STATUS efi_esp_probe_write(const struct efi_esp_file *file);

/* Free the extents of efi_esp_map; the file can be mapped again. */
void efi_esp_unmap(struct efi_esp_file *file);

/* Fill `platform` with the callbacks on `file` (which must stay where it is). */
void efi_esp_platform(struct efi_esp_file *file, struct vhdx_platform *platform);

/* --- files through the firmware's FAT driver (never while a disk is served) ---------- */

/* Open a file of the ESP by its UTF-8 path (EFI_UNSUPPORTED without a FAT driver). */
EFI_STATUS efi_esp_open_file(const struct efi_esp *esp, const char *path, UINT64 mode,
                             EFI_FILE_PROTOCOL **root, EFI_FILE_PROTOCOL **file);

/* What efi_esp_change_file changes: the size, and attribute bits (EFI_FILE_READ_ONLY...). */
struct efi_esp_change {
    bool resize;
    uint64_t size;
    uint64_t set_attributes;
    uint64_t clear_attributes;
};

/* Change a file's size or attributes, durably (the FAT driver's cache and the device's
 * are flushed: the mapping reads the partition directly next). */
EFI_STATUS efi_esp_change_file(const struct efi_esp *esp, const char *path,
                               const struct efi_esp_change *change);

/* Free bytes of the ESP's file system, as its FAT driver counts them. */
EFI_STATUS efi_esp_free_space(const struct efi_esp *esp, uint64_t *free_bytes);

/* Make `path` an empty file: delete it when it exists (read-only mark or not), create it. */
EFI_STATUS efi_esp_new_file(const struct efi_esp *esp, const char *path);

#endif

/*
 * handoff.h - which VHDX the operating system should attach, as the firmware handed it
 * over (the EFI variables of platform/handoff_format.h) or as the kernel command line
 * says (vhdx=PARTUUID=<guid>:/path/disk.vhdx[:ro], which wins when both are present),
 * and finding that file: the ESP partition among the block devices, its FAT serial,
 * and the file's identity against what the firmware left.
 */
#ifndef VHDX_HANDOFF_H
#define VHDX_HANDOFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "handoff_format.h"
#include "vhdx.h"

#define HANDOFF_WHY_MAX 480

/* A parent of a differencing chain, as the firmware opened it (read-only). */
struct handoff_parent {
    char path[VHDX_HANDOFF_PATH_MAX + 1];   /* on the ESP, '/' separators, from the root */
    struct vhdx_guid file_write_guid, data_write_guid, disk_id;
    uint64_t file_size;
};

/* One disk to attach. */
struct handoff_disk {
    char source[48];                /* "EFI variable VhdxDisk0", "kernel parameter vhdx=" */
    bool mbr;                       /* find the ESP by MBR signature + partition number */
    uint8_t partition_guid[16];     /* GPT unique partition GUID (on-disk byte order) */
    uint32_t mbr_signature;
    uint32_t partition;             /* 1-based; 0: any (kernel parameter) */
    bool have_fat_serial;
    uint32_t fat_serial;
    char path[VHDX_HANDOFF_PATH_MAX + 1];   /* on the ESP, '/' separators, from the root */
    bool read_only;
    bool have_identity;             /* a firmware record: the fields below are set */
    bool closed;                    /* ... confirmed by the firmware's clean close */
    uint32_t sector_size, block_size;
    uint64_t virtual_size;
    struct vhdx_guid disk_id, file_write_guid, data_write_guid, log_guid;
    unsigned parent_count;          /* a differencing child: its parents, nearest first */
    struct handoff_parent parents[VHDX_HANDOFF_MAX_PARENTS];
};

/*
 * The vhdx= parameter of a kernel command line: 1 and *disk filled, 0 when there is
 * none, -1 when it is malformed (`why` says how).
 */
int handoff_from_cmdline(const char *cmdline, struct handoff_disk *disk, char *why);

/*
 * A record from the firmware (the variable's data without the attribute word): 0, or
 * -1 with `why` (bad magic, version, size, checksum, ...).
 */
int handoff_parse_record(const uint8_t *data, size_t size, struct handoff_disk *disk,
                         char *why);

/*
 * The firmware's records in an efivarfs directory, VhdxDisk0, VhdxDisk1, ... in order
 * of their index; a bad record is reported on stderr and skipped.  Returns the count.
 */
unsigned handoff_from_efivars(const char *directory, struct handoff_disk *disks,
                              unsigned max);

/*
 * Find the ESP's partition device ("/dev/vda1"), waiting up to `wait_ms` for it to
 * appear; then check its FAT serial when the record has one.  0, or -1 with `why`.
 */
int handoff_find_esp(const struct handoff_disk *disk, unsigned wait_ms, char *device,
                     size_t size, char *why);

/*
 * Does the opened image match the firmware's record?  Virtual disk ID, size, sector
 * size, FileWriteGuid and DataWriteGuid (its parents: handoff_chain_matches).  True
 * (always, for a kernel parameter), or false with `why` naming the first difference.
 */
bool handoff_identity_matches(const struct handoff_disk *disk, const struct vhdx_info *info,
                              char *why);

/*
 * Is the opened parent the one the firmware opened as parent `p`?  Its FileWriteGuid,
 * DataWriteGuid, virtual disk ID and file size.  True, or false with `why`.
 */
bool handoff_parent_matches(const struct handoff_parent *p, const struct vhdx_info *info,
                            char *why);

/*
 * Are the parents the core opened below `disk` those of the record, level by level
 * (their number, and each as handoff_parent_matches says)?  True (always, for a kernel
 * parameter), or false with `why`.
 */
bool handoff_chain_matches(const struct handoff_disk *d, const struct vhdx_disk *disk,
                           char *why);

/* The first line of a small file (sysfs, procfs) without its newline; false if none. */
bool read_first_line(const char *path, char *out, size_t size);

/* "{...}" text of a GPT partition GUID stored on disk. */
void handoff_guid_text(const uint8_t guid[16], char text[39]);

#endif

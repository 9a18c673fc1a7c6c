/*
 * handoff_format.h - the record the firmware hands to the operating system for each
 * disk it mounted: which file on which ESP, and the identity the file had when the
 * firmware closed it.  Written by the firmware (efi/handoff.c) into a volatile EFI
 * variable, read by the host tool (tools/handoff.c, `vhdx attach --firmware`) from
 * efivarfs.  Plain C, shared by both; the layout is documented in the README ("The
 * hand-off from the firmware").
 *
 * The variable: vendor GUID VHDX_HANDOFF_GUID, name "VhdxDisk<N>" (N = 0..15, the
 * first free one at mount time), attributes BOOTSERVICE_ACCESS | RUNTIME_ACCESS (not
 * NON_VOLATILE: it lives until the next reset).  Linux shows it as
 * /sys/firmware/efi/efivars/VhdxDisk0-3d0fe25f-c31d-477f-af51-3d7df01ac01d (the first 4
 * bytes of that file are the attributes, the record follows).
 *
 * The record, every integer little-endian, GUIDs as stored on disk (the mixed-endian
 * EFI_GUID layout of GPT entries and VHDX headers):
 *
 *   offset size  field
 *        0    8  magic "VHDXHAND"
 *        8    2  version (1: no parents; 2: with the parent entries below)
 *       10    2  record size in bytes (all of it: the CRC covers every byte)
 *       12    4  CRC-32C of the record with this field zero
 *       16    4  flags (VHDX_HANDOFF_*)
 *       20    4  partition number of the ESP on its disk (1-based)
 *       24   16  GPT: the ESP's unique partition GUID (PARTUUID);
 *                MBR: the disk signature in the first 4 bytes, the rest zero
 *       40    4  FAT volume serial number of the ESP
 *       44    4  logical sector size of the virtual disk
 *       48    8  virtual disk size in bytes
 *       56    4  VHDX block size in bytes
 *       60    4  reserved (0)
 *       64   16  VirtualDiskId (metadata, spec 2.6.2.3)
 *       80   16  FileWriteGuid  } of the header, as the firmware's close will leave
 *       96   16  DataWriteGuid  } them
 *      112   16  LogGuid        } (zero once CLOSED confirms a clean close)
 *      128    8  file size in bytes
 *      136    2  path length in bytes
 *      138    2  parent count (0 in version 1)
 *      140    n  the file's path on the ESP: UTF-8, '\' separators, from the root
 *
 * Version 2, for a differencing child: after the path, one entry per parent of its
 * chain, the child's own parent first; each parent as the firmware opened it, read-only
 * (the firmware never writes a parent, so its identity holds until the OS opens it):
 *
 *   offset size  field (from the start of the entry)
 *        0   16  FileWriteGuid   } of the parent's header
 *       16   16  DataWriteGuid   }  (DataWriteGuid is the child's parent_linkage)
 *       32   16  VirtualDiskId
 *       48    8  file size in bytes
 *       56    2  path length in bytes
 *       58    6  reserved (0)
 *       64    n  the parent's path on the ESP as the firmware resolved it from the
 *                locator: UTF-8, '\' separators, from the root
 *
 * The record size is then 140 + path length + the sum of (64 + parent path length).  A
 * disk without parents is still written as version 1 (the same bytes), which the tool of
 * an older initramfs reads; that tool refuses a version 2 record, saying so.
 *
 * When it is written: a volatile variable can be written only while boot services exist
 * (UEFI 2.10 section 8.2: afterwards it is read-only), and the firmware closes its images
 * at ExitBootServices.  So the record is written at mount, with the header GUIDs as
 * opened, and again right after the session's first write, which renews FileWriteGuid
 * and DataWriteGuid once (spec 2.2.2.1); the close changes neither, it only empties the
 * log.  Where the firmware signals the "before ExitBootServices" event group (UEFI 2.8)
 * the images are closed there and the record is written a last time, marked CLOSED.
 * The operating system checks the GUIDs before it writes anything: any other writer
 * renews FileWriteGuid before its first change, so a mismatch means the file changed
 * after the firmware let go of it.
 */
#ifndef VHDX_HANDOFF_FORMAT_H
#define VHDX_HANDOFF_FORMAT_H

/* 3d0fe25f-c31d-477f-af51-3d7df01ac01d, as EFI_GUID fields and as efivarfs spells it. */
#define VHDX_HANDOFF_GUID_INIT \
    { 0x3d0fe25f, 0xc31d, 0x477f, { 0xaf, 0x51, 0x3d, 0x7d, 0xf0, 0x1a, 0xc0, 0x1d } }
#define VHDX_HANDOFF_GUID_TEXT "3d0fe25f-c31d-477f-af51-3d7df01ac01d"
#define VHDX_HANDOFF_NAME "VhdxDisk"         /* + decimal index */
#define VHDX_HANDOFF_MAX_DISKS 16

#define VHDX_HANDOFF_MAGIC "VHDXHAND"
#define VHDX_HANDOFF_VERSION 1          /* a disk without parents */
#define VHDX_HANDOFF_VERSION_CHAIN 2    /* with parent entries */

#define VHDX_HANDOFF_READ_ONLY (1u << 0)     /* mounted read-only by the firmware */
#define VHDX_HANDOFF_CLOSED    (1u << 1)     /* the GUIDs are those of the clean close */
#define VHDX_HANDOFF_MBR       (1u << 2)     /* the ESP is found by MBR signature */
#define VHDX_HANDOFF_KNOWN_FLAGS 0x7u

/* Field offsets. */
#define VHDX_HANDOFF_OFF_MAGIC          0
#define VHDX_HANDOFF_OFF_VERSION        8
#define VHDX_HANDOFF_OFF_SIZE           10
#define VHDX_HANDOFF_OFF_CRC            12
#define VHDX_HANDOFF_OFF_FLAGS          16
#define VHDX_HANDOFF_OFF_PARTITION      20
#define VHDX_HANDOFF_OFF_PARTITION_ID   24
#define VHDX_HANDOFF_OFF_FAT_SERIAL     40
#define VHDX_HANDOFF_OFF_SECTOR_SIZE    44
#define VHDX_HANDOFF_OFF_VIRTUAL_SIZE   48
#define VHDX_HANDOFF_OFF_BLOCK_SIZE     56
#define VHDX_HANDOFF_OFF_DISK_ID        64
#define VHDX_HANDOFF_OFF_FILE_WRITE     80
#define VHDX_HANDOFF_OFF_DATA_WRITE     96
#define VHDX_HANDOFF_OFF_LOG_GUID       112
#define VHDX_HANDOFF_OFF_FILE_SIZE      128
#define VHDX_HANDOFF_OFF_PATH_LENGTH    136
#define VHDX_HANDOFF_OFF_PARENTS        138
#define VHDX_HANDOFF_FIXED_SIZE         140

/* A parent entry's offsets (from the entry's start). */
#define VHDX_HANDOFF_PARENT_FILE_WRITE  0
#define VHDX_HANDOFF_PARENT_DATA_WRITE  16
#define VHDX_HANDOFF_PARENT_DISK_ID     32
#define VHDX_HANDOFF_PARENT_FILE_SIZE   48
#define VHDX_HANDOFF_PARENT_PATH_LENGTH 56
#define VHDX_HANDOFF_PARENT_FIXED_SIZE  64

#define VHDX_HANDOFF_PATH_MAX 512
#define VHDX_HANDOFF_MAX_PARENTS 16     /* a deeper chain is not handed over */
#define VHDX_HANDOFF_MAX_SIZE (VHDX_HANDOFF_FIXED_SIZE + VHDX_HANDOFF_PATH_MAX + \
                               VHDX_HANDOFF_MAX_PARENTS * \
                               (VHDX_HANDOFF_PARENT_FIXED_SIZE + VHDX_HANDOFF_PATH_MAX))

#endif

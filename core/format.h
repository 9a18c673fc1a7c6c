/*
 * format.h - the on-disk layout of MS-VHDX: offsets, sizes, signatures' places and
 * state values.  Section numbers ("spec 2.2.2") are MS-VHDX's; the digest is
 * ../shared/docs/vhdx-format.md in the project's workspace.
 */
#ifndef VHDX_FORMAT_H
#define VHDX_FORMAT_H

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

/* Metadata pages: the unit of the cache and of the log (spec 2.3.1: 4 KiB sectors). */
#define PAGE_SIZE             4096u
#define BAT_ENTRIES_PER_PAGE  (PAGE_SIZE / 8u)

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

/* Known GUIDs, in on-disk byte order (spec 2.2.3.2, 2.6.2); defined where parsed. */
extern const struct vhdx_guid GUID_BAT_REGION;
extern const struct vhdx_guid GUID_METADATA_REGION;
extern const struct vhdx_guid GUID_FILE_PARAMETERS;
extern const struct vhdx_guid GUID_VIRTUAL_DISK_SIZE;
extern const struct vhdx_guid GUID_VIRTUAL_DISK_ID;
extern const struct vhdx_guid GUID_LOGICAL_SECTOR_SIZE;
extern const struct vhdx_guid GUID_PHYSICAL_SECTOR_SIZE;
extern const struct vhdx_guid GUID_PARENT_LOCATOR;
extern const struct vhdx_guid GUID_LOCATOR_TYPE_VHDX;

#endif

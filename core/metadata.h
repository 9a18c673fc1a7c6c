/*
 * metadata.h - the metadata region (spec 2.6; owner of struct geometry and struct
 * locator): the table, the known items, and the parent locator of differencing disks.
 */
#ifndef VHDX_METADATA_H
#define VHDX_METADATA_H

#include "vhdx.h"

struct vhdx_disk;

/* What the known items say about the virtual disk (spec 2.6.2.1 - 2.6.2.5). */
struct geometry {
    uint32_t block_size;
    unsigned block_shift;
    uint32_t logical_sector_size;
    unsigned sector_shift;
    uint32_t physical_sector_size;
    uint64_t virtual_size;
    bool fixed;                     /* LeaveBlockAllocated */
    bool has_parent;                /* a differencing disk */
    struct vhdx_guid virtual_disk_id;
};

struct locator_pair {
    char *key;                      /* UTF-8, NUL-terminated */
    char *value;
};

struct locator {
    struct vhdx_guid type;
    struct locator_pair *pairs;
    uint32_t count;
    uint32_t item_offset;           /* where the item lies in the metadata region */
    uint32_t item_length;           /* 0: the file has no parent locator */
    uint32_t table_entry;
};

int metadata_load(struct vhdx_disk *disk);
void metadata_release(struct vhdx_disk *disk);
/* A parent locator item (spec 2.6.2.6) of VHDX type from UTF-8 pairs: 0, or
 * VHDX_E_ARGUMENT when it does not fit in `size` or a string is empty or too long. */
int metadata_build_locator(const struct vhdx_locator_entry *entries, uint32_t count,
                           uint8_t *item, uint32_t size, uint32_t *length);
/* UTF-8 text as UTF-16LE; bytes written, or SIZE_MAX when `out` is too small. */
size_t metadata_text_utf16(const char *text, uint8_t *out, size_t size);
/* Set (or add) one key of the parent locator, through the log. */
int metadata_set_locator(struct vhdx_disk *disk, const char *key, const char *value);

#endif

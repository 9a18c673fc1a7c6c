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
};

int metadata_load(struct vhdx_disk *disk);
void metadata_release(struct vhdx_disk *disk);

#endif

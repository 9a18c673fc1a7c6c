/*
 * region.h - the region table (spec 2.2.3; owner of struct regions): where the BAT and
 * the metadata live.
 */
#ifndef VHDX_REGION_H
#define VHDX_REGION_H

#include "vhdx.h"

struct vhdx_disk;

struct vhdx_region {
    struct vhdx_guid guid;
    uint64_t offset;
    uint32_t length;
    bool required;
};

struct regions {
    struct vhdx_region *list;
    uint32_t count;
    uint64_t bat_offset;
    uint32_t bat_length;
    uint64_t metadata_offset;
    uint32_t metadata_length;
};

int region_table_load(struct vhdx_disk *disk);
void region_table_release(struct vhdx_disk *disk);

#endif

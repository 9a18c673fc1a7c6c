/*
 * bat.h - the block allocation table (spec 2.4, 2.5; owner of struct bat): geometry,
 * entries through the page cache, and the validation at open.
 *
 * No code outside this file indexes the BAT: entries are read and changed here, one
 * 4 KiB page at a time through the cache, and counted as they change.
 */
#ifndef VHDX_BAT_H
#define VHDX_BAT_H

#include "vhdx.h"

struct vhdx_disk;

struct bat {
    uint32_t chunk_ratio;           /* payload blocks per sector-bitmap block */
    uint64_t payload_blocks;
    uint64_t bitmap_blocks;
    uint64_t entries;               /* entries the geometry requires */
    uint64_t present;               /* payload blocks FULLY_PRESENT */
    uint64_t partial;               /* payload blocks PARTIALLY_PRESENT */
    uint64_t chunk_partial;         /* validation: first PARTIALLY_PRESENT entry of the
                                       chunk being read, + 1 (0: none yet) */
};

/* The geometry from the metadata; the BAT region must hold every entry. */
int bat_setup(struct vhdx_disk *disk);
/*
 * Every entry, streamed: reserved bits, states, and every allocated block inside the
 * file, after the header section, clear of the log, the regions and every other block
 * (space.h).  Counts the blocks present.
 */
int bat_validate(struct vhdx_disk *disk);

/* The entry of payload block `block`, and changing it (VHDX_E_RANGE past the end). */
int bat_get_payload(struct vhdx_disk *disk, uint64_t block, uint64_t *entry);
int bat_set_payload(struct vhdx_disk *disk, uint64_t block, uint64_t entry);
/* The entry of the sector-bitmap block of `chunk` (differencing disks), and changing it. */
int bat_get_bitmap(struct vhdx_disk *disk, uint64_t chunk, uint64_t *entry);
int bat_set_bitmap(struct vhdx_disk *disk, uint64_t chunk, uint64_t entry);

#endif

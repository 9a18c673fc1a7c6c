/*
 * bitmap.h - sector bitmaps of differencing disks (spec 2.4, 2.5.1.2): which sectors of a
 * PARTIALLY_PRESENT block this file holds (bit set) and which come from the parent.
 *
 * One bitmap block of 1 MiB covers a chunk (2^23 sectors); bit 0 of byte 0 is the
 * chunk's first sector.  Its pages go through the cache and the log like BAT pages.
 */
#ifndef VHDX_BITMAP_H
#define VHDX_BITMAP_H

#include "vhdx.h"

struct vhdx_disk;

/*
 * From virtual `sector`, how many sectors (at most `count`, all in one block) share one
 * bit, and which: *present = the sectors are in this file.
 */
int bitmap_run(struct vhdx_disk *disk, uint64_t sector, uint64_t count, uint64_t *run,
               bool *present);
/* Set the bits of `count` sectors from `sector` (all in one block). */
int bitmap_set(struct vhdx_disk *disk, uint64_t sector, uint64_t count);

#endif

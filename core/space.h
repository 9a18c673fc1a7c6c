/*
 * space.h - where things are in the file and where new blocks go (owner of struct
 * space).
 *
 * `end` is the 1 MiB-aligned end of every allocated object (header section, log,
 * regions, blocks): a new block goes there, and the file past it is room.  `zero_from`
 * says where the file is known to read as zeros up to its end (after a zero-filling
 * grow), so new blocks are not zeroed twice.  While the BAT is validated at open, a map
 * of one bit per MiB of file finds blocks that overlap anything: its memory depends on
 * the file's size, not on the BAT's.
 */
#ifndef VHDX_SPACE_H
#define VHDX_SPACE_H

#include "vhdx.h"

struct vhdx_disk;

/* The map covers files up to this size (16 MiB of bits). */
#define SPACE_MAP_MAX_FILE (128ull << 40)

struct space {
    uint64_t end;
    uint64_t zero_from;
    uint8_t *map;                   /* during open only */
    uint64_t map_bits;
};

/* Open: the map, with the header section, the log and the regions in it. */
int space_start(struct vhdx_disk *disk);
/* Open: a block at [offset, offset + length); *overlaps when any of it was taken. */
void space_claim(struct vhdx_disk *disk, uint64_t offset, uint64_t length, bool *overlaps);
/* Open, once the file is final: drop the map. */
void space_finish(struct vhdx_disk *disk);
/*
 * The largest file the geometry can use: every object twice (a block relocated leaves
 * its old home behind) plus 64 MiB of slack.  A log may not grow the file past it.
 */
uint64_t space_limit(const struct vhdx_disk *disk);

/* Where a new object of `size` bytes goes (the file grows to hold it); not taken yet. */
int space_next(struct vhdx_disk *disk, uint64_t size, uint64_t *offset);
/* Zero [from, to) of a new object, except what is known to read as zeros already. */
int space_zero(struct vhdx_disk *disk, uint64_t from, uint64_t to);
/* The object at `offset` holds its data now: the next one goes after it. */
void space_take(struct vhdx_disk *disk, uint64_t offset, uint64_t size);
/* Grow the file so that `bytes` (rounded up to blocks) of room follow `end`. */
int space_reserve(struct vhdx_disk *disk, uint64_t bytes);

#endif

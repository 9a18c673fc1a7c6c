/*
 * overlay.h - a replayed log kept in memory (owner of struct overlay), seen through a
 * platform view that file.c reads through.
 *
 * Replay adds the sequence's descriptors in log order; the overlay keeps only their
 * final effect, as sorted, disjoint runs: zeros, or one 4 KiB data sector (read from
 * the log in the file when needed, so the log is never held in memory).  Reads through
 * the view get the file's bytes with the runs laid over them.
 */
#ifndef VHDX_OVERLAY_H
#define VHDX_OVERLAY_H

#include "vhdx.h"

struct vhdx_disk;
struct log_descriptor;

#define OVERLAY_ZEROS UINT32_MAX
/* Bounds: a batch of descriptors merged at a time, and the runs kept (32 bytes each). */
#define OVERLAY_BATCH    (64u * 1024u)
#define OVERLAY_MAX_RUNS (1u << 20)

struct overlay_run {
    uint64_t start, end;            /* file bytes [start, end) */
    uint32_t data_position;         /* log offset of the data sector, or OVERLAY_ZEROS */
    uint8_t leading[8];             /* the sector's bytes 0..7 (spec 2.3.1.4) */
    uint8_t trailing[4];            /* ... and 4092..4095 */
};

struct overlay {
    struct overlay_run *runs;       /* the final effect: sorted, disjoint */
    uint32_t count;
    struct overlay_run *batch;      /* descriptors not merged yet, in log order */
    uint32_t batch_count;
    struct vhdx_platform view;      /* reads through the overlay */
    uint8_t *sector;                /* a data sector being patched */
};

/* Add one descriptor (later ones win). */
int overlay_add(struct vhdx_disk *disk, const struct log_descriptor *descriptor);
/* Merge what is pending and let file.c read through the overlay (up to `size` bytes). */
int overlay_install(struct vhdx_disk *disk, uint64_t size);
/* Write the runs into the file (the part past its end grows it). */
int overlay_apply(struct vhdx_disk *disk);
void overlay_release(struct vhdx_disk *disk);

#endif

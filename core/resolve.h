/*
 * resolve.h - a virtual range becomes a short list of typed runs; read, write, map and
 * discard only execute runs.
 *
 * Pieces that continue each other are merged: data contiguous in the file (a 1 MiB read
 * inside one present block, or across blocks laid out back to back, is one run and so
 * one platform read), and zeros or parent ranges that follow each other.
 */
#ifndef VHDX_RESOLVE_H
#define VHDX_RESOLVE_H

#include "vhdx.h"

struct vhdx_disk;

enum run_kind {
    RUN_DATA,                       /* stored in this file at file_offset */
    RUN_ZERO,                       /* reads as zeros; no storage (a write needs a block) */
    RUN_PARENT                      /* reads from the parent (differencing disks) */
};

struct run {
    enum run_kind kind;
    uint64_t offset;                /* virtual byte offset */
    uint64_t length;
    uint64_t file_offset;           /* RUN_DATA; RUN_PARENT: where the block stores the
                                       run in this file (PARTIALLY_PRESENT), else 0 */
};

#define RESOLVE_MAX_RUNS 16u

struct resolved {
    struct run runs[RESOLVE_MAX_RUNS];
    uint32_t count;
    uint64_t length;                /* bytes the runs cover, from the start; may be less
                                       than asked: resolve the rest next */
};

/* Check a request of `count` sectors from `sector` against the disk. */
int resolve_check(struct vhdx_disk *disk, uint64_t sector, uint64_t count, const void *buffer);
int resolve(struct vhdx_disk *disk, uint64_t offset, uint64_t length, struct resolved *out);

#endif

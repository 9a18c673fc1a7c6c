/*
 * file.h - the core's only door to the platform (owner of struct file): memory, file
 * I/O, randomness.
 *
 * Reads go through `io`: the platform itself, or the view that log replay installs
 * while a dirty log's updates live in memory (overlay.c), so every parser above sees
 * the replayed file without knowing about the log.  Writes always go to the platform.
 */
#ifndef VHDX_FILE_H
#define VHDX_FILE_H

#include "vhdx.h"

struct vhdx_disk;

struct file {
    struct vhdx_platform platform;      /* the caller's, copied at open */
    const struct vhdx_platform *io;     /* reads: &platform, or replay's view */
    bool writable;                      /* writable open on a medium that allows it */
    uint64_t real_size;                 /* the platform file's size */
    uint64_t size;                      /* what reads may reach: more than real_size
                                           while a replay that grows the file is in memory */
    bool unflushed;                     /* written since the last flush */
    uint8_t *zeros;                     /* a chunk of zeros, for platforms without zero() */
    uint64_t memory_in_use;             /* bytes from core_alloc, and their peak */
    uint64_t memory_peak;
};

int file_init(struct vhdx_disk *disk, const struct vhdx_platform *platform, bool writable);
void file_release(struct vhdx_disk *disk);

/* Zeroed memory; NULL records VHDX_E_NOMEM.  core_free(NULL) does nothing. */
void *core_alloc(struct vhdx_disk *disk, size_t size);
void core_free(struct vhdx_disk *disk, void *p);

int file_read(struct vhdx_disk *disk, uint64_t offset, void *buf, size_t len);
int file_write(struct vhdx_disk *disk, uint64_t offset, const void *buf, size_t len);
int file_flush(struct vhdx_disk *disk);
int file_grow(struct vhdx_disk *disk, uint64_t new_size);
/* Make [offset, offset + length) read as zeros; the part past the end grows the file. */
int file_zero(struct vhdx_disk *disk, uint64_t offset, uint64_t length);
/* The range is no longer needed: let the platform free its storage, if it can. */
int file_discard(struct vhdx_disk *disk, uint64_t offset, uint64_t length);
int file_random_guid(struct vhdx_disk *disk, struct vhdx_guid *guid);

/* Read through `view` (which reaches `size` bytes) until file_clear_view. */
void file_set_view(struct vhdx_disk *disk, const struct vhdx_platform *view, uint64_t size);
void file_clear_view(struct vhdx_disk *disk);

#endif

/*
 * write.h - the write path, zeroing, discard and flush (owner of struct write_state).
 *
 * The order of events in an allocating write:
 *   1. the first write of a session renews FileWriteGuid and DataWriteGuid (header.c);
 *   2. resolve.c finds the block not stored; space.c gives it the place at the end of
 *      the allocated data (growing the file);
 *   3. the block is written whole: the request's bytes, zeros around them (unless the
 *      file is known to read as zeros there);
 *   4. its BAT entry changes in the cache (bat.c), and space.c moves the end past it.
 * And in a flush: the cache hands its dirty pages to the log writer, which flushes the
 * file (the data of step 3 is durable before any entry points at it), writes an entry,
 * flushes, and writes the pages in place.  A crash at any point leaves a file whose BAT
 * points only at data that was really written.
 */
#ifndef VHDX_WRITE_H
#define VHDX_WRITE_H

#include "vhdx.h"

struct vhdx_disk;

/* Old homes of blocks that now read as zeros, freed once the BAT change is in the log. */
#define WRITE_PENDING_DISCARDS 64u
#define WRITE_ZERO_CHUNK (64u * 1024u)

struct write_state {
    uint64_t discards[WRITE_PENDING_DISCARDS];
    uint32_t discard_count;
    uint8_t *zeros;                 /* WRITE_ZERO_CHUNK of zeros, made when first needed */
};

void write_release(struct vhdx_disk *disk);

#endif

/*
 * logwrite.h - writing metadata pages through the log (spec 2.3; owner of struct
 * log_writer).
 *
 * A commit: flush (the data the pages point at is durable first), write one entry
 * holding the pages, flush, then write the pages in place.  Those in-place writes are
 * made durable by the next flush, which comes before the next entry may claim the log
 * (its Tail is itself) or at close, which then marks the log empty.  The writer knows
 * nothing of what the pages hold.
 */
#ifndef VHDX_LOGWRITE_H
#define VHDX_LOGWRITE_H

#include "vhdx.h"

struct vhdx_disk;

struct log_page {
    uint64_t offset;                /* where the page lives in the file */
    const uint8_t *data;            /* 4 KiB, as it must stand there */
};

/* At most this many pages per entry: bounds the entry buffer (about 1 MiB). */
#define LOG_ENTRY_MAX_PAGES 256u

struct log_writer {
    bool active;                    /* the header names `guid`: the log holds entries */
    struct vhdx_guid guid;          /* this session's LogGuid (zero until needed) */
    uint32_t head_position;         /* where the last entry written starts */
    uint32_t head_length;           /* its length (0: none yet) */
    uint64_t next_sequence;
    uint8_t *buffer;                /* an entry being built */
    uint32_t buffer_pages;          /* data sectors the buffer has room for */
    bool failed;                    /* a commit stopped half-way: only replay is safe */
};

int logw_commit(struct vhdx_disk *disk, const struct log_page *pages, uint32_t count);
/* At close: make the in-place writes durable and mark the log empty. */
int logw_close(struct vhdx_disk *disk);
void logw_release(struct vhdx_disk *disk);

#endif

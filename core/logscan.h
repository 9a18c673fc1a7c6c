/*
 * logscan.h - finding the log's active sequence (spec 2.3.2, 2.3.3) and walking its
 * descriptors, reading the log as a stream: memory and work are proportional to the
 * log's size whatever its entries claim.
 */
#ifndef VHDX_LOGSCAN_H
#define VHDX_LOGSCAN_H

#include "vhdx.h"

struct vhdx_disk;

/* The active sequence, as found. */
struct log_sequence {
    uint32_t tail;                  /* log offset of its first (oldest) entry */
    uint32_t entries;
    uint64_t head_sequence;         /* SequenceNumber of its last entry */
    uint64_t flushed_file_offset;   /* the head entry's FlushedFileOffset */
    uint64_t last_file_offset;      /* the head entry's LastFileOffset */
};

/* One descriptor of the sequence, in log order (spec 2.3.1.2, 2.3.1.3). */
struct log_descriptor {
    uint64_t entry_sequence;
    uint64_t entry_last_file_offset;
    bool zero;                      /* a zero descriptor, else a data descriptor */
    uint64_t file_offset;
    uint64_t length;                /* ZeroLength, or 4096 for a data descriptor */
    uint32_t data_position;         /* data descriptor: log offset of its data sector */
    uint8_t leading[8];             /* data descriptor: bytes 0..7 of the sector */
    uint8_t trailing[4];            /* ... and bytes 4092..4095 */
};

/* VHDX_E_LOG_NO_SEQUENCE when the log holds no valid sequence for the header's LogGuid. */
int logscan_find(struct vhdx_disk *disk, struct log_sequence *active);

typedef int (*log_visit_fn)(struct vhdx_disk *disk, void *context,
                            const struct log_descriptor *descriptor);
/* Call `visit` for every descriptor of the sequence, tail entry first. */
int logscan_walk(struct vhdx_disk *disk, const struct log_sequence *active,
                 log_visit_fn visit, void *context);

#endif

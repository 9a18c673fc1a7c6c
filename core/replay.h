/*
 * replay.h - replaying a dirty log (spec 2.3.3; owner of struct replay).
 *
 * In two steps, so that nothing is written to a file that will be refused: prepare
 * finds the active sequence and lays its updates over the file in memory (overlay.h);
 * the region table, metadata and BAT are then validated through that view; finish
 * writes the updates in place (writable opens) or keeps the view (read-only opens).
 */
#ifndef VHDX_REPLAY_H
#define VHDX_REPLAY_H

#include "vhdx.h"

struct vhdx_disk;

struct replay {
    enum vhdx_log_state state;
    bool pending;                   /* prepared, not finished */
    uint32_t entries;               /* of the active sequence */
    uint64_t head_sequence;
    struct vhdx_guid guid;          /* the LogGuid that was replayed */
    uint64_t file_end;              /* the file's size once replayed */
};

int replay_prepare(struct vhdx_disk *disk);
/*
 * Refuse a replay that would grow the file past `size_limit` (and past its current
 * size); then apply it in place, or keep it in memory for a read-only open.
 */
int replay_finish(struct vhdx_disk *disk, uint64_t size_limit);

#endif

/*
 * header.h - the file type identifier and the two headers (spec 2.2.1, 2.2.2; owner of
 * struct headers).
 */
#ifndef VHDX_HEADER_H
#define VHDX_HEADER_H

#include "format.h"

struct vhdx_disk;

/* The fields of a header (spec 2.2.2) the core uses; reserved bytes are written as 0. */
struct vhdx_header {
    uint64_t sequence;
    struct vhdx_guid file_write_guid;
    struct vhdx_guid data_write_guid;
    struct vhdx_guid log_guid;
    uint16_t log_version;
    uint16_t version;
    uint32_t log_length;
    uint64_t log_offset;
};

struct headers {
    struct vhdx_header current;
    unsigned slot;                  /* 1 or 2 */
    bool file_guid_renewed;         /* FileWriteGuid renewed this session */
    bool data_guid_renewed;         /* DataWriteGuid renewed this session */
    bool failed;                    /* an update failed: the slots may disagree */
    uint8_t raw[HEADER_SIZE];       /* updates are built here: closing needs no memory */
};

/* Check the identifier, read both headers, choose the current one (spec 2.2.2). */
int header_load(struct vhdx_disk *disk);
/*
 * Write a new header (twice, spec 2.2.2.1) carrying `log_guid`; the first update of a
 * session renews FileWriteGuid, and DataWriteGuid too when `new_data_guid` is set and it
 * was not renewed yet.
 */
int header_update(struct vhdx_disk *disk, bool new_data_guid,
                  const struct vhdx_guid *log_guid);
/* A header update that sets DataWriteGuid to `data_guid` (a merge: the child's
 * parent_linkage2 names it first, spec 2.6.2.6.3 note <12>). */
int header_set_data_guid(struct vhdx_disk *disk, const struct vhdx_guid *data_guid);

#endif

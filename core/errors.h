/*
 * errors.h - recording failures and reporting problems (owner of struct report).
 *
 * fail() records the error of an operation that stops.  problem() is a structural
 * defect: fatal outside check mode; in check mode it is counted and reported, at most
 * VHDX_PROBLEMS_SHOWN per structure in full and the rest as a count, and validation goes
 * on unless the defect leaves nothing to validate.  quirk() is damage a reader can live
 * with (a bad spare copy): a warning normally, a problem in check mode.
 */
#ifndef VHDX_ERRORS_H
#define VHDX_ERRORS_H

#include "vhdx.h"

struct vhdx_disk;

struct report {
    struct vhdx_diag diag;              /* the last failure */
    bool checking;                      /* VHDX_OPEN_CHECK */
    uint32_t problems;                  /* check mode: every problem found */
    uint32_t shown[VHDX_PART_COUNT];    /* ... printed in full, per structure */
    uint32_t hidden[VHDX_PART_COUNT];   /* ... only counted, per structure */
};

void report_init(struct vhdx_disk *disk, bool checking);
int fail(struct vhdx_disk *disk, enum vhdx_error code, uint64_t a, uint64_t b,
         const char *s);
int problem(struct vhdx_disk *disk, bool fatal, enum vhdx_error code, uint64_t a,
            uint64_t b, const char *s);
/* problem() whose %s detail is a GUID. */
int problem_guid(struct vhdx_disk *disk, bool fatal, enum vhdx_error code, uint64_t a,
                 const struct vhdx_guid *guid);
void quirk(struct vhdx_disk *disk, enum vhdx_error code, uint64_t a, uint64_t b,
           const char *s);
void quirk_text(struct vhdx_disk *disk, enum vhdx_error_part part, const char *text,
                uint64_t a, uint64_t b, const char *s);
/* Would a problem of this structure be printed in full now? */
bool problem_shown(const struct vhdx_disk *disk, enum vhdx_error_part part);
/* Check mode, at the end: "... and N more problems with the BAT". */
void report_hidden_problems(struct vhdx_disk *disk);

/* Log a message through the platform (formatted like a diagnosis). */
void note(struct vhdx_disk *disk, enum vhdx_log_level level, enum vhdx_error code,
          uint64_t a, uint64_t b, const char *s);
void note_text(struct vhdx_disk *disk, enum vhdx_log_level level, const char *text,
               uint64_t a, uint64_t b, const char *s);
size_t format_message(char *out, size_t size, const char *template, uint64_t a,
                      uint64_t b, const char *s);

#endif

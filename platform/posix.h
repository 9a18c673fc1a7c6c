/*
 * posix.h - the VHDX platform contract on a POSIX file (host tool and tests).
 */
#ifndef VHDX_PLATFORM_POSIX_H
#define VHDX_PLATFORM_POSIX_H

#include <stdbool.h>
#include "vhdx.h"

struct posix_file {
    int fd;
    int direct_fd;              /* O_DIRECT descriptor of the same file, or -1 */
    const char *name;           /* for messages: "vhdx: NAME: ..." */
    bool writable;
    int verbosity;              /* 0: errors and warnings, 1: + info, 2: + debug */
    const char *volume_root;    /* parents' paths from a volume's root start here
                                   (NULL: the mount point holding this file) */
    /* Counters for tests and benchmarks. */
    unsigned long long reads, writes, flushes, zeroes, discards;
    unsigned long long bytes_read, bytes_written;
    /* What the core holds through allocate/release: now, at most, and at most asked for
     * at once (a refused request counts), and blocks not released yet. */
    unsigned long long alloc_current, alloc_peak, alloc_peak_requested, alloc_live;
};

/*
 * Open `path` and fill `platform` with callbacks on it.  Returns 0, or an errno value
 * (the file could not be opened); EBUSY when the image is in use: a writable open while
 * any other open holds it, or a read-only open while a writer holds it (a lock on the
 * whole file, released by posix_file_close or when the process ends).
 */
int posix_file_open(struct posix_file *file, const char *path, bool writable,
                    struct vhdx_platform *platform);

/* posix_file_open with POSIX_* flags. */
#define POSIX_DIRECT (1u << 0)      /* bypass the page cache where the file system can */
int posix_file_open_with(struct posix_file *file, const char *path, bool writable,
                         unsigned flags, struct vhdx_platform *platform);
void posix_file_close(struct posix_file *file);

#endif

/*
 * mem.h - the VHDX platform contract on a sparse in-memory file (host tests, fuzzing).
 *
 * The file is a tree of 4 KiB pages allocated on first write: a 64 TiB image whose file
 * is hundreds of MiB of mostly holes costs only the pages written, and holes read as
 * zeros.  Pages and tree nodes are shared copy-on-write, so a snapshot of the whole file
 * or a second file cloned from it costs nothing until one of them is written: tests take
 * one before every open and compare afterwards, and the power-loss test builds thousands
 * of crash images from one durable copy.
 *
 * Around the contract's callbacks the file keeps what tests assert on: call and byte
 * counters, an allocation tracker (bytes and blocks the core holds now, their high-water
 * mark), injected faults (fail the Nth read, write, flush, grow or allocation, or every
 * one from the Nth on; a failing write may be torn; a grow limit; an allocation limit),
 * a hook that sees every read, write, flush and grow, and the durable state as of the
 * last completed flush, so a test can cut the power and lose what was not flushed.
 * zero() and discard() are writes (of zeros; of junk, as discarded bytes may read as
 * anything), so hooks and faults see them too.
 *
 * Host-only (C11 and libc), like posix.c.  Not thread-safe: one file, one user.
 */
#ifndef VHDX_PLATFORM_MEM_H
#define VHDX_PLATFORM_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vhdx.h"

#define MEM_PAGE_SIZE 4096u
/* Offsets the page tree can hold (128 PiB); grow() past it fails with VHDX_E_NO_SPACE. */
#define MEM_MAX_FILE_SIZE ((uint64_t)1 << 57)

struct mem_node;

/*
 * The contents of a file: shared page tree, size, and what holes read as.  Holes below
 * `zero_below` read as zeros (the loaded file, or everything for a new one); holes that
 * grow() added above it read as `fill` (0 like ftruncate, or junk to mimic an ESP whose
 * new clusters hold old data).  A snapshot is a struct mem_image of its own.
 */
struct mem_image {
    struct mem_node *root;
    uint64_t size;
    uint64_t zero_below;
    uint8_t fill;
};

enum mem_op {
    MEM_OP_READ,
    MEM_OP_WRITE,
    MEM_OP_FLUSH,
    MEM_OP_GROW
};

/* What the hook sees: one platform call, after it was carried out or refused. */
struct mem_event {
    enum mem_op op;
    uint64_t call;              /* 1-based number of this call among calls of its kind */
    uint64_t offset;            /* read/write: file offset; grow: the size asked for */
    size_t length;              /* read/write: bytes asked */
    size_t done;                /* write: bytes that reached the file (a torn write: fewer) */
    const void *data;           /* write: the caller's bytes */
    int result;                 /* what the call returned to the core */
    bool injected;              /* the failure was injected */
};

/* Fail call number `nth` (1-based; 0: never) of one kind, and with `persist` every later
 * one too. */
struct mem_fault {
    uint64_t nth;
    bool persist;
};

struct mem_faults {
    struct mem_fault read, write, flush, grow, allocate;
    /* A write that fails by injection stores its first `torn_keep` bytes (rounded down to
     * whole 512-byte sectors) before failing: a torn write. 0: nothing reaches the file. */
    size_t torn_keep;
    /* After the first injected failure every read, write, flush and grow fails (the
     * device is gone: power cut). */
    bool stop_after_fault;
    bool stopped;
    /* grow() beyond this size fails with VHDX_E_NO_SPACE (0: no limit). */
    uint64_t grow_limit;
};

struct mem_counters {
    uint64_t reads, writes, flushes, grows, sizes;  /* calls, failed ones included */
    uint64_t bytes_read, bytes_written;             /* bytes transferred */
    uint64_t injected;                              /* calls failed by injection */
};

struct mem_allocations {
    uint64_t current;           /* bytes the core holds now */
    uint64_t peak;              /* high-water mark of current */
    uint64_t peak_requested;    /* high-water mark of current + a request, refused or not:
                                   what the core tried to hold at once */
    uint64_t largest_request;
    uint64_t live;              /* blocks not released yet */
    uint64_t calls;             /* allocate calls */
    uint64_t refused;           /* allocate calls answered with NULL */
    uint64_t limit;             /* refuse a request that takes current past this (0: none) */
};

struct mem_file {
    struct mem_image image;
    /* With keep_durable, the contents as of the last completed flush (or of when
     * keep_durable was set by mem_file_keep_durable). */
    bool keep_durable;
    struct mem_image durable;

    bool read_only;             /* media that refuses writes (VHDX_PLATFORM_READ_ONLY) */
    struct mem_counters count;
    struct mem_allocations alloc;
    void *live_blocks;          /* what the core holds (see mem_file_release_all) */
    struct mem_faults fault;

    /* Called for every read, write, flush and grow (may be NULL). */
    void (*hook)(void *hook_context, const struct mem_event *event);
    void *hook_context;

    /* Messages from the core. */
    bool quiet;                 /* else errors, problems and warnings go to stderr */
    uint64_t errors, problems, warnings, infos;
    uint64_t message_bytes;
    char last_message[512];
    char last_problem[512];     /* the last error or problem */

    uint64_t random_state;      /* GUIDs: deterministic per file */

    /* Differencing parents: open_sibling finds these files by name (a path's last
     * component, '.\' and case ignored), opened read-only; see mem_file_add_sibling. */
    struct mem_sibling {
        const char *name;
        struct mem_file *file;
    } siblings[4];
    unsigned sibling_count;
};

/* An empty file (size 0). */
void mem_file_init(struct mem_file *file);
/* The contents of a host file (all-zero pages stay holes).  0 or an errno value. */
int mem_file_load(struct mem_file *file, const char *path);
/* Write the contents to a host file, holes as holes.  0 or an errno value. */
int mem_file_save(const struct mem_file *file, const char *path);
/* Release the contents and the durable copy; counters and settings stay readable. */
void mem_file_free(struct mem_file *file);

/* Let open_sibling of `file` find `other` under `name` (both stay the caller's; at most 4).
 * The sibling is served read-only through its own platform callbacks. */
void mem_file_add_sibling(struct mem_file *file, const char *name, struct mem_file *other);

/* Fill `platform` with the callbacks on `file` (GROW_ZEROES unless the fill is junk). */
void mem_file_platform(struct mem_file *file, struct vhdx_platform *platform);

/* A second file with the same contents (shared until written) and settings (quiet,
 * read_only, random_state, fill); counters, faults, limits and hook start afresh. */
void mem_file_clone(struct mem_file *copy, const struct mem_file *file);
/* Release every block the core still holds: for a test that abandoned an open midway
 * (longjmp out of a callback), never after a normal close. */
void mem_file_release_all(struct mem_file *file);
/* Zero the counters and the allocation high-water marks (peak = current). */
void mem_file_reset_counters(struct mem_file *file);
/* What grow() adds reads as `fill` from now on (holes that read as zeros keep doing so). */
void mem_file_grow_fill(struct mem_file *file, uint8_t fill);
/* Remember the contents as durable now, and again at every completed flush. */
void mem_file_keep_durable(struct mem_file *file);
/* Power cut: the contents go back to the durable copy (needs keep_durable). */
void mem_file_lose_unflushed(struct mem_file *file);

/* Direct access for test setup and checks: no counting, no faults, no hook.
 * peek fails past the end; poke grows the file (as grow() would) to fit. */
bool mem_file_peek(const struct mem_file *file, uint64_t offset, void *buffer, size_t length);
bool mem_file_poke(struct mem_file *file, uint64_t offset, const void *buffer, size_t length);
/* Set the size: growing adds holes (as grow() would), shrinking drops the pages past it. */
bool mem_file_resize(struct mem_file *file, uint64_t size);
/* Pages that hold data (what the file costs in memory, in MEM_PAGE_SIZE units). */
uint64_t mem_file_pages(const struct mem_file *file);

/* Snapshots: share the contents now; release; compare byte for byte. */
void mem_snapshot(const struct mem_file *file, struct mem_image *snapshot);
void mem_image_release(struct mem_image *image);
/* Same size and bytes?  If not and `where` is not NULL, the first offset that differs
 * (the shorter size when only the sizes differ). */
bool mem_image_same(const struct mem_image *a, const struct mem_image *b, uint64_t *where);
/* The file's contents become the snapshot's (shared). */
void mem_file_restore(struct mem_file *file, const struct mem_image *snapshot);

#endif

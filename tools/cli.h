/*
 * cli.h - what the host tool's commands share: the parsed command line, opening and
 * closing an image on the POSIX platform, and the error conventions (exit status 1 for
 * an invalid image, 2 for usage and I/O errors; messages "vhdx: FILE: reason").
 */
#ifndef VHDX_CLI_H
#define VHDX_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "posix.h"
#include "vhdx.h"

#define EXIT_INVALID 1
#define EXIT_USAGE 2

struct options {
    const char *command;
    const char *image;          /* the first argument after the command (attach: IMAGE,
                                   detach: the device) */
    const char *device;         /* attach: the second argument, /dev/nbdN */
    char **argv;                /* the program's own (attach marks argv[0] with '@') */
    unsigned given;             /* OPT_* bits of the options on the command line */
    int verbosity;
    uint64_t offset, length;    /* --offset, --length */
    const char *socket_path;    /* --socket */
    uint64_t port;              /* --port */
    const char *bind_address;   /* --bind */
    uint64_t cache_bytes;       /* --cache; 0: the core's default */
    uint64_t size, block_size, sector_size;     /* create: --size, --block-size, ... */
    const char *parent;         /* create: --parent */
    const char *volume_root;    /* --volume-root: where parent paths from a volume's root
                                   start (default: the mount point holding the image) */
    uint64_t wait_seconds;      /* --wait (attach --firmware: for the ESP to appear) */
    uint64_t dead_timeout;      /* --dead-timeout (attach: seconds the kernel holds I/O
                                   for a restarted server) */
};

/* Options, as bits of options.given. */
#define OPT_JSON      (1u << 0)
#define OPT_OFFSET    (1u << 1)
#define OPT_LENGTH    (1u << 2)
#define OPT_SOCKET    (1u << 3)
#define OPT_PORT      (1u << 4)
#define OPT_BIND      (1u << 5)
#define OPT_READ_ONLY (1u << 6)
#define OPT_CACHE     (1u << 7)
#define OPT_SIZE      (1u << 8)
#define OPT_BLOCK_SIZE (1u << 9)
#define OPT_SECTOR_SIZE (1u << 10)
#define OPT_FIXED     (1u << 11)
#define OPT_PARENT    (1u << 12)
#define OPT_VOLUME_ROOT (1u << 13)
#define OPT_FIRMWARE  (1u << 14)
#define OPT_BACKGROUND (1u << 15)
#define OPT_DRY_RUN   (1u << 16)
#define OPT_ALL       (1u << 17)
#define OPT_WAIT      (1u << 18)
#define OPT_RECONNECT (1u << 19)
#define OPT_DEAD_TIMEOUT (1u << 20)

struct session {
    struct posix_file file;
    struct vhdx_platform platform;
    struct vhdx_disk *disk;
    struct vhdx_diag last_open_error;   /* why open_image failed, if it did */
};

/* "vhdx: <fmt with arg>" and the hint to --help; returns EXIT_USAGE. */
int usage_error(const char *fmt, const char *arg);

/* "vhdx: IMAGE: <diagnosis>"; returns the exit status for it. */
int report(const char *image, const struct vhdx_diag *diag);

/* Open o->image (VHDX_OPEN_WRITABLE added when `writable`); 0 or an exit status. */
int open_image(struct session *s, const struct options *o, bool writable, unsigned flags);

/* The same for `path`, with POSIX_* flags for the platform (platform/posix.h). */
int open_image_with(struct session *s, const struct options *o, const char *path,
                    bool writable, unsigned flags, unsigned posix_flags);

/* Close (flush, clean log); 0 or an exit status. */
int close_image(struct session *s, const char *image);

/* tools/serve.c */
int cmd_serve(const struct options *o);
int cmd_create(const struct options *o);
int cmd_merge(const struct options *o);

/* tools/attach.c */
int cmd_attach(const struct options *o);
int cmd_detach(const struct options *o);
/* This program run as /run/initramfs/shutdown ACTION (systemd's shutdown pivot). */
int shutdown_main(int argc, char **argv);

#endif

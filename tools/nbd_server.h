/*
 * nbd_server.h - the NBD protocol (the NetworkBlockDevice project's doc/proto.md) over
 * the VHDX core, one connection at a time, one request at a time.
 *
 * Two phases, two entry points:
 *   nbd_handshake()  the fixed-newstyle option haggling a network client goes through
 *                    (`vhdx serve`);
 *   nbd_transmit()   the transmission phase: requests and replies (simple, or
 *                    structured when the handshake negotiated them) until the client
 *                    disconnects.  The kernel's NBD driver speaks only this phase
 *                    on a socket handed to it with ioctls, so `vhdx attach` (next issue)
 *                    calls nbd_transmit() directly on its socketpair, with the flags of
 *                    nbd_transmission_flags() given to NBD_SET_FLAGS.
 *
 * The connection owns no memory of its own after nbd_conn_init(): its buffers are
 * allocated there once (an attach serving a root file system must not allocate while
 * it serves) and reused for every request and every later connection.
 *
 * Waiting: every blocking wait is a ppoll() with `wait_mask` as the signal mask, so a
 * caller that blocks its stop signals elsewhere gets them delivered only while the
 * server waits, sets `*stop` in its handler, and the server ends the connection at the
 * next request boundary (a request whose payload has not fully arrived is dropped
 * unanswered and unwritten).
 */
#ifndef VHDX_NBD_SERVER_H
#define VHDX_NBD_SERVER_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "vhdx.h"

/* The largest READ or WRITE payload, advertised as the maximum block size. */
#define NBD_MAX_PAYLOAD (32u << 20)
/* WRITE_ZEROES works in pieces of this size, aligned to it: the smallest VHDX block
 * (spec 2.6.2.1: 1 MiB to 256 MiB, a power of two), so a piece never spans two blocks. */
#define NBD_ZERO_CHUNK (1u << 20)

/* What is served: an open disk and what the protocol says about it. */
struct nbd_export {
    struct vhdx_disk *disk;
    const char *image;          /* for messages: "vhdx serve: IMAGE: ..." */
    const char *description;    /* NBD_INFO_DESCRIPTION, or NULL */
    uint64_t size;              /* bytes */
    uint32_t sector_size;       /* logical sector: the minimum block size */
    uint32_t preferred_size;    /* preferred block size */
    bool read_only;
};

/* Fill an export from an open disk (read-only if the disk or `read_only` says so). */
void nbd_export_init(struct nbd_export *export, struct vhdx_disk *disk, const char *image,
                     bool read_only);

/* NBD transmission flags for the export (also what NBD_SET_FLAGS wants). */
uint16_t nbd_transmission_flags(const struct nbd_export *export);

/* Why a connection ended (never 0: internally 0 means "go on"). */
enum nbd_end {
    NBD_END_DISCONNECT = 1,     /* NBD_CMD_DISC, or NBD_OPT_ABORT in the handshake */
    NBD_END_CLOSED,             /* the client closed the connection (between requests) */
    NBD_END_CLOSED_MID_MESSAGE, /* ... in the middle of a request or an option */
    NBD_END_STOPPED,            /* *stop was set (a signal) */
    NBD_END_TIMEOUT,            /* the handshake stalled */
    NBD_END_PROTOCOL,           /* the client broke the protocol; see `why` */
    NBD_END_SOCKET              /* a socket error (errno in `why`) */
};

struct nbd_conn {
    /* Set by the caller before each connection. */
    int fd;
    const struct nbd_export *export;
    const sigset_t *wait_mask;          /* signal mask while waiting, or NULL */
    volatile sig_atomic_t *stop;        /* may be NULL */
    int verbosity;                      /* 1: say why each request failed */
    /* Where messages go, one line each without the newline ("vhdx serve: IMAGE: ...");
     * NULL: stderr.  (An attach serving a root file system sends them to the kernel
     * log instead.) */
    void (*log)(void *context, const char *line);
    void *log_context;
    /* Make a request's BAT changes durable before its reply (attach with a dead-connection
     * timeout: a server killed after the reply would lose them from memory, while the
     * kernel, reconnected to a new server, believes them cached until its next FLUSH). */
    bool flush_metadata_before_reply;

    /* Owned by the connection (nbd_conn_init / nbd_conn_free). */
    uint8_t *buffer;                    /* NBD_MAX_PAYLOAD bytes */
    uint8_t *zeros;                     /* NBD_ZERO_CHUNK bytes of zeros */

    /* Results of the last connection. */
    char why[160];                      /* detail of NBD_END_PROTOCOL / _SOCKET */
    uint64_t requests, failed_requests;
    bool no_zeroes;                     /* handshake: client sent NBD_FLAG_C_NO_ZEROES */
    bool structured;                    /* handshake: NBD_OPT_STRUCTURED_REPLY acked */
    bool base_allocation;               /* handshake: base:allocation selected */
    char error_text[200];               /* why the current request failed */
};

/* Allocate the buffers; 0 or ENOMEM. */
int nbd_conn_init(struct nbd_conn *conn);
void nbd_conn_free(struct nbd_conn *conn);

/*
 * The fixed-newstyle handshake on conn->fd: greeting, option haggling, up to
 * NBD_OPT_GO or NBD_OPT_EXPORT_NAME.  Returns -1 when the transmission phase begins,
 * else the enum nbd_end that ended the connection.
 */
int nbd_handshake(struct nbd_conn *conn);

/* The transmission phase on conn->fd until the connection ends; returns why. */
enum nbd_end nbd_transmit(struct nbd_conn *conn);

/* A short text for an end ("the client disconnected", ...). */
const char *nbd_end_text(enum nbd_end end);

#endif

/*
 * nbd_server.c - the NBD handshake and transmission phase over the VHDX core.
 *
 * Written from the NBD protocol document (NetworkBlockDevice project, doc/proto.md and
 * its INFO, WRITE_ZEROES extensions): "proto" below names its sections.  Every number on
 * the wire is big-endian.
 *
 * What is offered, and why:
 *   - fixed newstyle, NBD_FLAG_NO_ZEROES; options EXPORT_NAME, GO, INFO, LIST, ABORT,
 *     STRUCTURED_REPLY, LIST_META_CONTEXT and SET_META_CONTEXT (one context:
 *     base:allocation); every other option (STARTTLS, ...) is answered
 *     NBD_REP_ERR_UNSUP.
 *   - READ (with structured replies: one OFFSET_DATA chunk, so DF is offered too),
 *     WRITE (FUA: flushed before the reply; requests waiting for a flush share one,
 *     see "Group commit"), FLUSH, DISC, and on a writable export
 *     WRITE_ZEROES and TRIM:
 *       WRITE_ZEROES  vhdx_write_zeroes: whole blocks of a dynamic disk become
 *                     PAYLOAD_BLOCK_ZERO and their file space is given back; with
 *                     NBD_CMD_FLAG_NO_HOLE ("the area MUST be fully provisioned") zeros
 *                     are written instead, so every block of the range is stored and a
 *                     later write there needs no new space;
 *       TRIM          vhdx_discard: whole blocks become PAYLOAD_BLOCK_UNMAPPED and their
 *                     space is given back; partial blocks are left as they are (proto
 *                     lets a server discard only part of the range).
 *   - BLOCK_STATUS for base:allocation, exact from vhdx_map: a run stored in the file
 *     is 0, a run that reads as zeros without storage (not present, ZERO, UNMAPPED) is
 *     HOLE | ZERO.  Its descriptors are whole logical sectors and never go past the
 *     requested length.
 *   - Errors of the core are answered by their class (vhdx_error_class), never by the
 *     individual code: I/O and a corrupt image EIO, memory ENOMEM, a full file system
 *     ENOSPC, a read-only image EPERM, what the core cannot do ENOTSUP, a bad argument
 *     EINVAL.  With structured replies the error carries the message.
 *
 * Bad requests: an error reply when the stream stays in step (EINVAL for an unknown
 * command or flag, a misaligned or oversized request, a read past the end; ENOSPC for a
 * write past the end, as proto's "Error values" asks; EPERM for a write to a read-only
 * export), the connection closed when it cannot (a bad magic number, a WRITE whose
 * payload is over the advertised maximum, an option too long to be one of ours).  A
 * WRITE's payload is always read before any check, so a refused write never leaves its
 * data in the stream to be taken for the next request.
 */
#include "nbd_server.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

/* proto "Newstyle negotiation" and "Fixed newstyle negotiation". */
#define NBD_INIT_MAGIC          UINT64_C(0x4e42444d41474943)   /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC          UINT64_C(0x49484156454f5054)   /* "IHAVEOPT" */
#define NBD_OPT_REPLY_MAGIC     UINT64_C(0x0003e889045565a9)
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES      (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES    (1u << 1)

/* proto "Option types". */
enum {
    NBD_OPT_EXPORT_NAME = 1,
    NBD_OPT_ABORT = 2,
    NBD_OPT_LIST = 3,
    NBD_OPT_INFO = 6,
    NBD_OPT_GO = 7,
    NBD_OPT_STRUCTURED_REPLY = 8,
    NBD_OPT_LIST_META_CONTEXT = 9,
    NBD_OPT_SET_META_CONTEXT = 10
};

/* proto "Option reply types". */
#define NBD_REP_ACK             1u
#define NBD_REP_SERVER          2u
#define NBD_REP_INFO            3u
#define NBD_REP_META_CONTEXT    4u
#define NBD_REP_ERR_UNSUP       (0x80000000u + 1)
#define NBD_REP_ERR_INVALID     (0x80000000u + 3)

/* NBD_REP_INFO types (the INFO extension). */
enum {
    NBD_INFO_EXPORT = 0,
    NBD_INFO_NAME = 1,
    NBD_INFO_DESCRIPTION = 2,
    NBD_INFO_BLOCK_SIZE = 3
};

/* proto "Transmission flags". */
#define NBD_FLAG_HAS_FLAGS      (1u << 0)
#define NBD_FLAG_READ_ONLY      (1u << 1)
#define NBD_FLAG_SEND_FLUSH     (1u << 2)
#define NBD_FLAG_SEND_FUA       (1u << 3)
#define NBD_FLAG_SEND_TRIM      (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF        (1u << 7)

/* proto "Request message", "Simple reply message", "Request types", "Command flags". */
#define NBD_REQUEST_MAGIC       0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC  0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu
#define NBD_CHUNK_HEAD_SIZE     20
#define NBD_REQUEST_SIZE        28
#define NBD_REPLY_SIZE          16
enum {
    NBD_CMD_READ = 0,
    NBD_CMD_WRITE = 1,
    NBD_CMD_DISC = 2,
    NBD_CMD_FLUSH = 3,
    NBD_CMD_TRIM = 4,
    NBD_CMD_WRITE_ZEROES = 6,
    NBD_CMD_BLOCK_STATUS = 7
};
#define NBD_CMD_FLAG_FUA        (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE    (1u << 1)
#define NBD_CMD_FLAG_DF         (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE    (1u << 3)

/* proto "Structured reply flags", "Structured reply types". */
#define NBD_REPLY_FLAG_DONE     (1u << 0)
enum {
    NBD_REPLY_TYPE_NONE = 0,
    NBD_REPLY_TYPE_OFFSET_DATA = 1,
    NBD_REPLY_TYPE_BLOCK_STATUS = 5,
    NBD_REPLY_TYPE_ERROR = (1 << 15) + 1
};

/* proto "base:allocation metadata context". */
#define NBD_STATE_HOLE          (1u << 0)
#define NBD_STATE_ZERO          (1u << 1)
#define BASE_ALLOCATION         "base:allocation"
#define BASE_ALLOCATION_ID      1u
/* Descriptors in one BLOCK_STATUS reply at most: a client asks again from where the
 * reply stopped (proto allows a shorter reply). */
#define STATUS_DESCRIPTORS_MAX  1024u

/* proto "Error values": fixed numbers on the wire, whatever the host's errno says. */
enum {
    NBD_EPERM = 1,
    NBD_EIO = 5,
    NBD_ENOMEM = 12,
    NBD_EINVAL = 22,
    NBD_ENOSPC = 28,
    NBD_ENOTSUP = 95
};

/* A client gets this long for the whole handshake: serving is one connection at a
 * time, so a client that connects and stalls must not keep the next one out. */
#define HANDSHAKE_MS 10000
/* The longest option we read: an export name (at most NAME_MAX bytes, proto
 * "Conventions") plus an INFO request list, or a meta-context request with a few
 * queries.  A longer one is not ours to skip. */
#define NAME_MAX 4096
#define OPTION_MAX (64u * 1024u)
#define NO_DEADLINE (-1)

/* -------------------------------------------------------------------------------- */
/* Big-endian fields.                                                                */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get16(p) << 16 | get16(p + 2);
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

/* -------------------------------------------------------------------------------- */
/* The export.                                                                       */

void nbd_export_init(struct nbd_export *export, struct vhdx_disk *disk, const char *image,
                     bool read_only)
{
    struct vhdx_info info;

    vhdx_get_info(disk, &info);
    memset(export, 0, sizeof *export);
    export->disk = disk;
    export->image = image;
    export->size = info.virtual_size;
    export->sector_size = info.logical_sector_size;
    /* Preferred: the physical sector, but never below a 4 KiB page. */
    export->preferred_size = info.physical_sector_size > 4096 ? info.physical_sector_size : 4096;
    if (export->preferred_size < export->sector_size)
        export->preferred_size = export->sector_size;
    export->read_only = read_only || info.read_only;
}

uint16_t nbd_transmission_flags(const struct nbd_export *export)
{
    uint16_t flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA;

    if (export->read_only)
        flags |= NBD_FLAG_READ_ONLY;
    else
        flags |= NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_TRIM;
    return flags;
}

/* What this connection was told: DF goes with structured replies (proto "Transmission
 * flags": it MUST be clear without them). */
static uint16_t connection_flags(const struct nbd_conn *c)
{
    return (uint16_t)(nbd_transmission_flags(c->export) | (c->structured ? NBD_FLAG_SEND_DF : 0));
}

const char *nbd_end_text(enum nbd_end end)
{
    switch (end) {
    case NBD_END_DISCONNECT: return "the client disconnected";
    case NBD_END_CLOSED: return "the client closed the connection";
    case NBD_END_CLOSED_MID_MESSAGE: return "the client closed the connection mid-message";
    case NBD_END_STOPPED: return "the server is stopping";
    case NBD_END_TIMEOUT: return "the handshake timed out";
    case NBD_END_PROTOCOL: return "protocol violation";
    case NBD_END_SOCKET: return "socket error";
    }
    return "?";
}

int nbd_conn_init(struct nbd_conn *conn)
{
    memset(conn, 0, sizeof *conn);
    conn->fd = -1;
    conn->buffer = aligned_alloc(4096, NBD_MAX_PAYLOAD);
    conn->zeros = aligned_alloc(4096, NBD_ZERO_CHUNK);
    if (!conn->buffer || !conn->zeros) {
        nbd_conn_free(conn);
        return ENOMEM;
    }
    memset(conn->zeros, 0, NBD_ZERO_CHUNK);
    return 0;
}

void nbd_conn_free(struct nbd_conn *conn)
{
    free(conn->buffer);
    free(conn->zeros);
    conn->buffer = conn->zeros = NULL;
}

/* -------------------------------------------------------------------------------- */
/* Socket I/O: non-blocking calls, and ppoll() with the caller's signal mask to wait. */

static int64_t now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int socket_error(struct nbd_conn *c, const char *what)
{
    snprintf(c->why, sizeof c->why, "%s: %s", what, strerror(errno));
    return NBD_END_SOCKET;
}

/* Wait until the socket is ready for `events`: 0, or why the connection ends. */
static int wait_socket(struct nbd_conn *c, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = { .fd = c->fd, .events = events };
        struct timespec ts, *timeout = NULL;
        int n;

        if (c->stop && *c->stop)
            return NBD_END_STOPPED;
        if (deadline != NO_DEADLINE) {
            int64_t left = deadline - now_ms();

            if (left <= 0)
                return NBD_END_TIMEOUT;
            ts.tv_sec = (time_t)(left / 1000);
            ts.tv_nsec = (long)(left % 1000) * 1000000L;
            timeout = &ts;
        }
        n = ppoll(&p, 1, timeout, c->wait_mask);
        if (n > 0)
            return 0;       /* readable, writable, or hung up: the next call says which */
        if (n < 0 && errno != EINTR)
            return socket_error(c, "poll");
    }
}

/*
 * Receive exactly `length` bytes.  `boundary`: nothing of the current message has been
 * read yet, so a close here is a clean one.
 */
static int recv_all(struct nbd_conn *c, void *buffer, size_t length, bool boundary,
                    int64_t deadline)
{
    uint8_t *p = buffer;
    size_t got = 0;

    while (got < length) {
        ssize_t n = recv(c->fd, p + got, length - got, MSG_DONTWAIT);

        if (n > 0) {
            got += (size_t)n;
        } else if (n == 0 || errno == ECONNRESET) {
            return boundary && got == 0 ? NBD_END_CLOSED : NBD_END_CLOSED_MID_MESSAGE;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int end = wait_socket(c, POLLIN, deadline);

            if (end)
                return end;
        } else if (errno != EINTR) {
            return socket_error(c, "receive");
        }
    }
    return 0;
}

static int send_all(struct nbd_conn *c, struct iovec *iov, int count, int64_t deadline)
{
    while (count > 0) {
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)count };
        ssize_t n = sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int end = wait_socket(c, POLLOUT, deadline);

                if (end)
                    return end;
                continue;
            }
            if (errno == EINTR)
                continue;
            if (errno == EPIPE || errno == ECONNRESET)
                return NBD_END_CLOSED_MID_MESSAGE;
            return socket_error(c, "send");
        }
        while (count > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            count--;
        }
        if (count > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

static int send_bytes(struct nbd_conn *c, const void *data, size_t length, int64_t deadline)
{
    struct iovec iov = { .iov_base = (void *)data, .iov_len = length };

    return send_all(c, &iov, 1, deadline);
}

static int protocol_error(struct nbd_conn *c, const char *what, uint64_t value)
{
    snprintf(c->why, sizeof c->why, "%s (0x%" PRIx64 ")", what, value);
    return NBD_END_PROTOCOL;
}

/* -------------------------------------------------------------------------------- */
/* Handshake (proto "Fixed newstyle negotiation", the INFO extension).               */

struct option_request {
    uint32_t option;
    uint32_t length;
    const uint8_t *data;
    int64_t deadline;
};

static int option_reply(struct nbd_conn *c, const struct option_request *o, uint32_t type,
                        const void *data, uint32_t length)
{
    uint8_t head[20];
    struct iovec iov[2] = {
        { .iov_base = head, .iov_len = sizeof head },
        { .iov_base = (void *)data, .iov_len = length },
    };

    put64(head, NBD_OPT_REPLY_MAGIC);
    put32(head + 8, o->option);
    put32(head + 12, type);
    put32(head + 16, length);
    return send_all(c, iov, length ? 2 : 1, o->deadline);
}

/* An error reply carries a message for the user (proto "Option reply types"). */
static int option_error(struct nbd_conn *c, const struct option_request *o, uint32_t type,
                        const char *message)
{
    return option_reply(c, o, type, message, (uint32_t)strlen(message));
}

/* NBD_OPT_EXPORT_NAME: no reply header, just the export's size and flags. */
static int export_name_reply(struct nbd_conn *c, const struct option_request *o)
{
    uint8_t reply[8 + 2 + 124] = { 0 };

    put64(reply, c->export->size);
    put16(reply + 8, connection_flags(c));
    return send_bytes(c, reply, c->no_zeroes ? 10 : sizeof reply, o->deadline);
}

/*
 * NBD_OPT_INFO and NBD_OPT_GO.  Data: u32 name length, name, u16 count, count x u16
 * information requests.  Always sent: NBD_INFO_EXPORT (required) and
 * NBD_INFO_BLOCK_SIZE (our minimum is the logical sector, not the default of 1);
 * NAME and DESCRIPTION when asked for.  The one export answers to any name.
 */
static int info_or_go(struct nbd_conn *c, const struct option_request *o, bool *accepted)
{
    const struct nbd_export *e = c->export;
    uint8_t reply[2 + NAME_MAX];
    uint32_t name_length;
    uint16_t count;
    bool want_name = false, want_description = false;
    int end;

    *accepted = false;
    if (o->length < 6 || (name_length = get32(o->data)) > o->length - 6 ||
        o->length != 4 + name_length + 2 + 2 * (uint32_t)(count = get16(o->data + 4 + name_length)))
        return option_error(c, o, NBD_REP_ERR_INVALID,
                            "malformed request: name and information list do not add up");
    if (name_length > NAME_MAX)
        return option_error(c, o, NBD_REP_ERR_INVALID, "export name over 4096 bytes");
    for (uint16_t i = 0; i < count; i++) {
        uint16_t type = get16(o->data + 4 + name_length + 2 + 2 * i);

        want_name |= type == NBD_INFO_NAME;
        want_description |= type == NBD_INFO_DESCRIPTION;
    }

    put16(reply, NBD_INFO_EXPORT);
    put64(reply + 2, e->size);
    put16(reply + 10, connection_flags(c));
    end = option_reply(c, o, NBD_REP_INFO, reply, 12);

    put16(reply, NBD_INFO_BLOCK_SIZE);
    put32(reply + 2, e->sector_size);
    put32(reply + 6, e->preferred_size);
    put32(reply + 10, NBD_MAX_PAYLOAD);
    if (!end)
        end = option_reply(c, o, NBD_REP_INFO, reply, 14);

    if (!end && want_name) {
        put16(reply, NBD_INFO_NAME);
        memcpy(reply + 2, o->data + 4, name_length);
        end = option_reply(c, o, NBD_REP_INFO, reply, 2 + name_length);
    }
    if (!end && want_description && e->description) {
        size_t n = strlen(e->description);

        n = n > NAME_MAX ? NAME_MAX : n;
        put16(reply, NBD_INFO_DESCRIPTION);
        memcpy(reply + 2, e->description, n);
        end = option_reply(c, o, NBD_REP_INFO, reply, 2 + (uint32_t)n);
    }
    if (!end)
        end = option_reply(c, o, NBD_REP_ACK, NULL, 0);
    *accepted = !end;
    return end;
}

/* A length-prefixed string of an option's data: its bytes and length, or false when
 * the data ends first. */
static bool take_string(const struct option_request *o, uint32_t *at, const uint8_t **text,
                        uint32_t *length)
{
    if (o->length - *at < 4)
        return false;
    *length = get32(o->data + *at);
    *at += 4;
    if (*length > o->length - *at)
        return false;
    *text = o->data + *at;
    *at += *length;
    return true;
}

static bool same_text(const uint8_t *text, uint32_t length, const char *want)
{
    return length == strlen(want) && !memcmp(text, want, length);
}

/*
 * NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT (proto "Metadata querying").
 * Data: u32 name length, name, u32 query count, count x (u32 length, query).  The one
 * context is base:allocation: LIST finds it for no query, "base:" and
 * "base:allocation"; SET selects it for "base:allocation" only.  Queries of other
 * namespaces are ignored, as proto asks.
 */
static int meta_context(struct nbd_conn *c, const struct option_request *o)
{
    bool set = o->option == NBD_OPT_SET_META_CONTEXT, found = false;
    const uint8_t *text;
    uint32_t at = 0, length, count;
    uint8_t reply[4 + sizeof BASE_ALLOCATION];
    int end;

    if (set)
        c->base_allocation = false;     /* replaced, even when this request fails */
    if (set && !c->structured)
        return option_error(c, o, NBD_REP_ERR_INVALID,
                            "NBD_OPT_SET_META_CONTEXT needs NBD_OPT_STRUCTURED_REPLY first");
    if (!take_string(o, &at, &text, &length) || o->length - at < 4)
        return option_error(c, o, NBD_REP_ERR_INVALID,
                            "malformed request: the export name does not fit");
    if (length > NAME_MAX)
        return option_error(c, o, NBD_REP_ERR_INVALID, "export name over 4096 bytes");
    count = get32(o->data + at);
    at += 4;
    found = !set && count == 0;
    for (uint32_t i = 0; i < count; i++) {
        if (!take_string(o, &at, &text, &length))
            return option_error(c, o, NBD_REP_ERR_INVALID,
                                "malformed request: the queries do not fit");
        if (length > NAME_MAX)
            return option_error(c, o, NBD_REP_ERR_INVALID, "query over 4096 bytes");
        found |= same_text(text, length, BASE_ALLOCATION) ||
                 (!set && same_text(text, length, "base:"));
    }
    if (at != o->length)
        return option_error(c, o, NBD_REP_ERR_INVALID,
                            "malformed request: data after the last query");
    end = 0;
    if (found) {
        /* proto: a LIST reply's context ID is reserved, zero. */
        put32(reply, set ? BASE_ALLOCATION_ID : 0);
        memcpy(reply + 4, BASE_ALLOCATION, strlen(BASE_ALLOCATION));
        end = option_reply(c, o, NBD_REP_META_CONTEXT, reply,
                           4 + (uint32_t)strlen(BASE_ALLOCATION));
        c->base_allocation = set && !end;
    }
    return end ? end : option_reply(c, o, NBD_REP_ACK, NULL, 0);
}

int nbd_handshake(struct nbd_conn *c)
{
    int64_t deadline = now_ms() + HANDSHAKE_MS;
    uint8_t greeting[18], client_flags[4];
    int end;

    c->why[0] = 0;
    c->requests = c->failed_requests = 0;
    c->no_zeroes = c->structured = c->base_allocation = false;
    put64(greeting, NBD_INIT_MAGIC);
    put64(greeting + 8, NBD_OPTS_MAGIC);
    put16(greeting + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    if ((end = send_bytes(c, greeting, sizeof greeting, deadline)) ||
        (end = recv_all(c, client_flags, 4, true, deadline)))
        return end;
    /* proto "Client flags": the server MUST drop the connection on an unknown flag.
     * A client without FIXED_NEWSTYLE is served as fixed newstyle (proto allows it). */
    if (get32(client_flags) & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
        return protocol_error(c, "unknown client flags", get32(client_flags));
    c->no_zeroes = get32(client_flags) & NBD_FLAG_C_NO_ZEROES;

    for (;;) {
        uint8_t head[16];
        struct option_request o = { .deadline = deadline, .data = c->buffer };

        if ((end = recv_all(c, head, sizeof head, true, deadline)))
            return end;
        if (get64(head) != NBD_OPTS_MAGIC)
            return protocol_error(c, "bad option magic", get64(head));
        o.option = get32(head + 8);
        o.length = get32(head + 12);
        if (o.length > OPTION_MAX)
            return protocol_error(c, "option data too long", o.length);
        if ((end = recv_all(c, c->buffer, o.length, false, deadline)))
            return end;

        switch (o.option) {
        case NBD_OPT_EXPORT_NAME:
            end = export_name_reply(c, &o);
            return end ? end : -1;
        case NBD_OPT_ABORT:
            /* proto: the server MUST reply with an ACK; the client may be gone already. */
            option_reply(c, &o, NBD_REP_ACK, NULL, 0);
            return NBD_END_DISCONNECT;
        case NBD_OPT_LIST:
            if (o.length) {
                end = option_error(c, &o, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
            } else {
                uint8_t server[4] = { 0 };  /* one export, the default (empty) name */

                end = option_reply(c, &o, NBD_REP_SERVER, server, sizeof server);
                if (!end)
                    end = option_reply(c, &o, NBD_REP_ACK, NULL, 0);
            }
            break;
        case NBD_OPT_STRUCTURED_REPLY:
            if (o.length) {
                end = option_error(c, &o, NBD_REP_ERR_INVALID,
                                   "NBD_OPT_STRUCTURED_REPLY takes no data");
            } else {
                c->structured = true;
                end = option_reply(c, &o, NBD_REP_ACK, NULL, 0);
            }
            break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
            end = meta_context(c, &o);
            break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO: {
            bool accepted;

            /* A malformed GO gets an error reply and haggling goes on. */
            end = info_or_go(c, &o, &accepted);
            if (accepted && o.option == NBD_OPT_GO)
                return -1;
            break;
        }
        default:
            end = option_error(c, &o, NBD_REP_ERR_UNSUP, "option not supported by vhdx serve");
            break;
        }
        if (end)
            return end;
    }
}

/* -------------------------------------------------------------------------------- */
/* Transmission (proto "Transmission", "Request types").                             */

struct request {
    uint16_t flags;
    uint16_t type;
    uint8_t handle[8];          /* echoed as sent */
    uint64_t offset;
    uint32_t length;
};

/* One reply message: a simple reply, or one structured chunk (DONE set) of `type`. */
static int send_reply(struct nbd_conn *c, const struct request *r, uint16_t type,
                      const void *prefix, uint32_t prefix_length, const void *data,
                      uint32_t length)
{
    uint8_t head[NBD_CHUNK_HEAD_SIZE];
    struct iovec iov[3] = {
        { .iov_base = head, .iov_len = NBD_REPLY_SIZE },
        { .iov_base = (void *)prefix, .iov_len = prefix_length },
        { .iov_base = (void *)data, .iov_len = length },
    };

    if (!c->structured) {
        put32(head, NBD_SIMPLE_REPLY_MAGIC);
        put32(head + 4, 0);
        memcpy(head + 8, r->handle, 8);
        iov[1] = iov[2];
        return send_all(c, iov, length ? 2 : 1, NO_DEADLINE);
    }
    put32(head, NBD_STRUCTURED_REPLY_MAGIC);
    put16(head + 4, NBD_REPLY_FLAG_DONE);
    put16(head + 6, type);
    memcpy(head + 8, r->handle, 8);
    put32(head + 16, prefix_length + length);
    iov[0].iov_len = NBD_CHUNK_HEAD_SIZE;
    return send_all(c, iov, 3, NO_DEADLINE);
}

/* Success with no data. */
static int reply_done(struct nbd_conn *c, const struct request *r)
{
    return send_reply(c, r, NBD_REPLY_TYPE_NONE, NULL, 0, NULL, 0);
}

/*
 * An error: the simple reply's error field, or an NBD_REPLY_TYPE_ERROR chunk carrying
 * c->error_text (set by refuse and core_failure) for the user to read.
 */
static int reply_error(struct nbd_conn *c, const struct request *r, uint32_t error)
{
    uint8_t head[NBD_CHUNK_HEAD_SIZE], body[6];
    size_t n = strlen(c->error_text);
    struct iovec iov[3] = {
        { .iov_base = head, .iov_len = NBD_REPLY_SIZE },
        { .iov_base = body, .iov_len = sizeof body },
        { .iov_base = c->error_text, .iov_len = n },
    };

    c->failed_requests++;
    if (!c->structured) {
        put32(head, NBD_SIMPLE_REPLY_MAGIC);
        put32(head + 4, error);
        memcpy(head + 8, r->handle, 8);
        return send_all(c, iov, 1, NO_DEADLINE);
    }
    put32(head, NBD_STRUCTURED_REPLY_MAGIC);
    put16(head + 4, NBD_REPLY_FLAG_DONE);
    put16(head + 6, NBD_REPLY_TYPE_ERROR);
    memcpy(head + 8, r->handle, 8);
    put32(head + 16, (uint32_t)(sizeof body + n));
    put32(body, error);
    put16(body + 4, (uint16_t)n);
    iov[0].iov_len = NBD_CHUNK_HEAD_SIZE;
    return send_all(c, iov, 3, NO_DEADLINE);
}

static int reply(struct nbd_conn *c, const struct request *r, uint32_t error)
{
    return error ? reply_error(c, r, error) : reply_done(c, r);
}

/* What a client is told about a failure of the core: by the error's class. */
static uint32_t nbd_error_for(enum vhdx_error code)
{
    switch (vhdx_error_class(code)) {
    case VHDX_CLASS_NO_MEMORY: return NBD_ENOMEM;
    case VHDX_CLASS_NO_SPACE: return NBD_ENOSPC;
    case VHDX_CLASS_READ_ONLY: return NBD_EPERM;
    case VHDX_CLASS_UNSUPPORTED: return NBD_ENOTSUP;
    case VHDX_CLASS_ARGUMENT: return NBD_EINVAL;
    case VHDX_CLASS_IO:
    case VHDX_CLASS_NOT_FOUND:          /* a parent lost mid-way: an I/O error here */
    case VHDX_CLASS_CORRUPT:
    case VHDX_CLASS_NONE:
        break;
    }
    return NBD_EIO;
}

static const char *command_name(uint16_t type)
{
    switch (type) {
    case NBD_CMD_READ: return "read";
    case NBD_CMD_WRITE: return "write";
    case NBD_CMD_FLUSH: return "flush";
    case NBD_CMD_TRIM: return "trim";
    case NBD_CMD_WRITE_ZEROES: return "write-zeroes";
    case NBD_CMD_BLOCK_STATUS: return "block-status";
    }
    return "request";
}

/* One message line, "vhdx serve: IMAGE: ...", to conn->log or stderr. */
__attribute__((format(printf, 2, 3)))
static void say(struct nbd_conn *c, const char *fmt, ...)
{
    char line[600];
    int n = snprintf(line, sizeof line, "vhdx serve: %s: ", c->export->image);
    va_list args;

    va_start(args, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, args);
    va_end(args);
    if (c->log)
        c->log(c->log_context, line);
    else
        fprintf(stderr, "%s\n", line);
}

/* A failure of the core: always worth a line (a full disk, a failing file). */
static uint32_t core_failure(struct nbd_conn *c, const struct request *r)
{
    const struct vhdx_diag *diag = vhdx_last_diag(c->export->disk);

    vhdx_describe(diag, c->error_text, sizeof c->error_text);
    say(c, "%s of %" PRIu32 " bytes at offset %" PRIu64 ": %s", command_name(r->type),
        r->length, r->offset, c->error_text);
    return nbd_error_for(diag->code);
}

/* A request the client should not have sent: said only with -v. */
static uint32_t refuse(struct nbd_conn *c, const struct request *r, uint32_t error,
                       const char *why)
{
    snprintf(c->error_text, sizeof c->error_text, "%s", why);
    if (c->verbosity > 0)
        say(c, "refused %s (type %u, flags 0x%x) of %" PRIu32 " bytes at offset %" PRIu64
            ": %s", command_name(r->type), r->type, r->flags, r->length, r->offset, why);
    return error;
}

/*
 * Checks shared by the commands with a range: 0 or the error to reply.  Past the end:
 * ENOSPC for the commands that write data, EINVAL for the others (proto "Request
 * types").
 */
static uint32_t check_range(struct nbd_conn *c, const struct request *r, uint16_t allowed_flags,
                            bool writes, uint32_t past_end)
{
    const struct nbd_export *e = c->export;

    if (r->flags & ~allowed_flags)
        return refuse(c, r, NBD_EINVAL, "unknown or inapplicable command flags");
    if (writes && e->read_only)
        return refuse(c, r, NBD_EPERM, "the export is read-only");
    if (r->offset % e->sector_size || r->length % e->sector_size)
        return refuse(c, r, NBD_EINVAL, "not whole logical sectors");
    if (r->offset > e->size || r->length > e->size - r->offset)
        return refuse(c, r, past_end, "past the end of the disk");
    return 0;
}

static uint32_t flush_for(struct nbd_conn *c, const struct request *r)
{
    if (c->export->read_only || !vhdx_flush(c->export->disk))
        return 0;
    return core_failure(c, r);
}

/*
 * WRITE_ZEROES.  By default vhdx_write_zeroes (whole blocks of a dynamic disk become
 * ZERO and give their space back).  NBD_CMD_FLAG_NO_HOLE asks for the range to be fully
 * provisioned: zeros are written in NBD_ZERO_CHUNK pieces, so every block of it gets
 * storage and BLOCK_STATUS then reports it as data.
 */
static uint32_t write_zeroes(struct nbd_conn *c, const struct request *r)
{
    const struct nbd_export *e = c->export;
    uint64_t offset = r->offset, end = r->offset + r->length;

    if (!(r->flags & NBD_CMD_FLAG_NO_HOLE))
        return vhdx_write_zeroes(e->disk, offset / e->sector_size,
                                 r->length / e->sector_size) ? core_failure(c, r) : 0;
    while (offset < end) {
        uint64_t piece = NBD_ZERO_CHUNK - offset % NBD_ZERO_CHUNK;

        if (piece > end - offset)
            piece = end - offset;
        if (vhdx_write(e->disk, offset / e->sector_size, piece / e->sector_size, c->zeros))
            return core_failure(c, r);
        offset += piece;
    }
    return 0;
}

/*
 * BLOCK_STATUS for base:allocation: descriptors (u32 length, u32 flags) from vhdx_map,
 * neighbours of the same status merged, at most one with REQ_ONE, and never past the
 * requested range.  Built in conn->buffer.
 */
static int block_status(struct nbd_conn *c, const struct request *r)
{
    const struct nbd_export *e = c->export;
    uint32_t max = r->flags & NBD_CMD_FLAG_REQ_ONE ? 1 : STATUS_DESCRIPTORS_MAX;
    uint32_t count = 0, error;
    uint8_t context[4];
    uint64_t sector = r->offset / e->sector_size, left = r->length / e->sector_size;
    uint8_t *d = c->buffer;

    if (!c->base_allocation)
        return reply_error(c, r, refuse(c, r, NBD_EINVAL,
                                        "no metadata context was negotiated"));
    error = check_range(c, r, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE, false, NBD_EINVAL);
    if (!error && !r->length)
        error = refuse(c, r, NBD_EINVAL, "zero length");
    while (!error && left) {
        uint64_t run;
        unsigned status;
        uint32_t flags;

        if (vhdx_map(e->disk, sector, left, &run, &status) || !run) {
            error = core_failure(c, r);
            break;
        }
        flags = status == VHDX_MAP_ZERO ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0;
        if (count && get32(d + 8 * (count - 1) + 4) == flags) {
            uint8_t *last = d + 8 * (count - 1);

            put32(last, get32(last) + (uint32_t)(run * e->sector_size));
        } else if (count < max) {
            put32(d + 8 * count, (uint32_t)(run * e->sector_size));
            put32(d + 8 * count + 4, flags);
            count++;
        } else {
            break;
        }
        sector += run;
        left -= run;
    }
    if (error)
        return reply_error(c, r, error);
    put32(context, BASE_ALLOCATION_ID);
    return send_reply(c, r, NBD_REPLY_TYPE_BLOCK_STATUS, context, 4, d, 8 * count);
}

/* Deliver stop signals that arrived while the server was busy (they are blocked
 * outside ppoll): a client that never pauses must not keep the server from stopping. */
static bool stop_requested(struct nbd_conn *c)
{
    if (c->wait_mask) {
        struct timespec zero = { 0, 0 };

        ppoll(NULL, 0, &zero, c->wait_mask);
    }
    return c->stop && *c->stop;
}

static int read_request(struct nbd_conn *c, const struct request *r)
{
    const struct nbd_export *e = c->export;
    uint16_t flags = NBD_CMD_FLAG_FUA | (c->structured ? NBD_CMD_FLAG_DF : 0);
    uint32_t error;
    uint8_t offset[8];

    if (r->length > NBD_MAX_PAYLOAD)
        return reply_error(c, r, refuse(c, r, NBD_EINVAL, "over the maximum block size"));
    error = check_range(c, r, flags, false, NBD_EINVAL);
    if (!error && vhdx_read(e->disk, r->offset / e->sector_size, r->length / e->sector_size,
                            c->buffer))
        error = core_failure(c, r);
    if (error)
        return reply_error(c, r, error);
    if (!r->length)
        return reply_done(c, r);    /* a data chunk must hold at least one byte */
    put64(offset, r->offset);
    return send_reply(c, r, NBD_REPLY_TYPE_OFFSET_DATA, offset, 8, c->buffer, r->length);
}

/* A modifying request left BAT changes in memory that the connection wants durable. */
static bool metadata_pending(const struct nbd_conn *c)
{
    return c->flush_metadata_before_reply && vhdx_allocation_pending(c->export->disk);
}

/*
 * Group commit.  A request that must be durable before its reply (FUA, or new blocks
 * under flush_metadata_before_reply) is held while more requests already wait on the
 * socket; when the socket is idle, the list is full, or a FLUSH comes, one vhdx_flush
 * covers every held request and their replies go out, each with that flush's result.
 * The kernel keeps many requests in flight, so one flush then serves many allocating
 * writes.  Only replies wait: a held write's data and BAT change are already in the
 * core, so later requests (reads too) see them.
 */
#define HELD_MAX 64

struct held_replies {
    unsigned count;
    struct request requests[HELD_MAX];
};

/* Is a request already waiting to be read? */
static bool request_waiting(struct nbd_conn *c)
{
    struct pollfd p = { .fd = c->fd, .events = POLLIN };

    return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

/* Flush once for every held request, then reply to each: 0, or why the connection ends. */
static int release_held(struct nbd_conn *c, struct held_replies *held)
{
    uint32_t error;
    int end = 0;

    if (!held->count)
        return 0;
    error = flush_for(c, &held->requests[0]);
    for (unsigned i = 0; i < held->count && !end; i++)
        end = reply(c, &held->requests[i], error);
    held->count = 0;
    return end;
}

/* The reply of a request that needs a flush first: held, or released with the others. */
static int reply_after_flush(struct nbd_conn *c, struct held_replies *held,
                             const struct request *r)
{
    held->requests[held->count++] = *r;
    if (r->type != NBD_CMD_FLUSH && held->count < HELD_MAX && request_waiting(c))
        return 0;
    return release_held(c, held);
}

/* A modifying request's reply: at once, or after a flush when it must be durable. */
static int reply_modified(struct nbd_conn *c, struct held_replies *held,
                          const struct request *r, uint32_t error)
{
    if (!error && ((r->flags & NBD_CMD_FLAG_FUA) || metadata_pending(c)))
        return reply_after_flush(c, held, r);
    return reply(c, r, error);
}

static int serve_request(struct nbd_conn *c, struct held_replies *held,
                         const struct request *r)
{
    const struct nbd_export *e = c->export;
    uint32_t error;
    int end;

    c->error_text[0] = 0;
    switch (r->type) {
    case NBD_CMD_READ:
        return read_request(c, r);

    case NBD_CMD_WRITE:
        /* The payload first, so the stream stays in step whatever is refused. */
        if (r->length > NBD_MAX_PAYLOAD) {
            reply_error(c, r, refuse(c, r, NBD_EINVAL, "over the maximum block size"));
            return protocol_error(c, "write payload over the maximum block size", r->length);
        }
        if ((end = recv_all(c, c->buffer, r->length, false, NO_DEADLINE)))
            return end;
        error = check_range(c, r, NBD_CMD_FLAG_FUA, true, NBD_ENOSPC);
        if (!error && vhdx_write(e->disk, r->offset / e->sector_size,
                                 r->length / e->sector_size, c->buffer))
            error = core_failure(c, r);
        return reply_modified(c, held, r, error);

    case NBD_CMD_WRITE_ZEROES:
        error = check_range(c, r, NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE, true, NBD_ENOSPC);
        if (!error)
            error = write_zeroes(c, r);
        return reply_modified(c, held, r, error);

    case NBD_CMD_TRIM:
        error = check_range(c, r, NBD_CMD_FLAG_FUA, true, NBD_EINVAL);
        if (!error && vhdx_discard(e->disk, r->offset / e->sector_size,
                                   r->length / e->sector_size))
            error = core_failure(c, r);
        return reply_modified(c, held, r, error);

    case NBD_CMD_BLOCK_STATUS:
        return block_status(c, r);

    case NBD_CMD_FLUSH:
        if (r->flags & ~NBD_CMD_FLAG_FUA)
            error = refuse(c, r, NBD_EINVAL, "unknown or inapplicable command flags");
        else if (r->offset || r->length)
            error = refuse(c, r, NBD_EINVAL, "offset and length must be zero");
        else
            return reply_after_flush(c, held, r);   /* one flush for it and the held */
        return reply(c, r, error);

    case NBD_CMD_DISC:
        return NBD_END_DISCONNECT;

    default:
        /* CACHE (not offered) and unknown commands: none has a payload we could know
         * the length of except WRITE, so the stream stays in step. */
        return reply_error(c, r, refuse(c, r, NBD_EINVAL, "command not supported"));
    }
}

enum nbd_end nbd_transmit(struct nbd_conn *c)
{
    struct held_replies held = { .count = 0 };

    c->why[0] = 0;
    for (;;) {
        uint8_t head[NBD_REQUEST_SIZE];
        struct request r;
        int end;

        /* Held replies go out before the server waits, and before it stops. */
        if (held.count && (!request_waiting(c) || stop_requested(c)) &&
            (end = release_held(c, &held)))
            return (enum nbd_end)end;
        if (stop_requested(c))
            return NBD_END_STOPPED;
        if ((end = recv_all(c, head, sizeof head, true, NO_DEADLINE)))
            return (enum nbd_end)end;
        if (get32(head) != NBD_REQUEST_MAGIC)
            return (enum nbd_end)protocol_error(c, "bad request magic", get32(head));
        r.flags = get16(head + 4);
        r.type = get16(head + 6);
        memcpy(r.handle, head + 8, 8);
        r.offset = get64(head + 16);
        r.length = get32(head + 24);
        c->requests++;
        if ((end = serve_request(c, &held, &r))) {
            if (end == NBD_END_DISCONNECT)      /* the replies owed come first */
                release_held(c, &held);
            return (enum nbd_end)end;
        }
    }
}

/*
 * serve.c - `vhdx serve IMAGE (--socket PATH | --port N [--bind ADDR]) [--read-only]`:
 * the virtual disk over NBD (tools/nbd_server.c) to any NBD client, one connection after
 * another, until SIGTERM or SIGINT; then the image is flushed and closed, so its log is
 * clean.  TCP listens on 127.0.0.1 unless --bind names another address: NBD has no
 * authentication, and a disk is not something to offer to a network by default.
 *
 * The image stays open for the whole run, locked (platform/posix.c): a second writer
 * is refused, and the core's state is shared by every connection in turn.
 *
 * Signals: SIGTERM and SIGINT are blocked except while the server waits (ppoll with
 * the mask below), so one that arrives at any moment ends the current connection at a
 * request boundary and the loop below, never a request halfway.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "nbd_server.h"

#define LISTEN_BACKLOG 16

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int signal_number)
{
    stop_signal = signal_number;
}

struct listener {
    int fd;
    bool tcp;
    const char *socket_path;    /* unlinked at the end (a Unix socket we created) */
    char where[300];            /* the NBD URI clients use */
};

static int listen_error(const char *what, const char *where)
{
    fprintf(stderr, "vhdx serve: %s %s: %s\n", what, where, strerror(errno));
    return EXIT_USAGE;
}

/* A socket file left by a server that is gone (connect is refused) is replaced; a live
 * one, or a file that is not a socket, is not. */
static int listen_unix(const char *path, struct listener *l)
{
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    struct stat st;

    if (strlen(path) >= sizeof address.sun_path) {
        fprintf(stderr, "vhdx serve: socket path too long (at most %zu bytes): %s\n",
                sizeof address.sun_path - 1, path);
        return EXIT_USAGE;
    }
    memcpy(address.sun_path, path, strlen(path) + 1);
    l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l->fd < 0)
        return listen_error("cannot create a socket for", path);
    if (bind(l->fd, (struct sockaddr *)&address, sizeof address) != 0) {
        int probe;
        bool stale = false;

        if (errno != EADDRINUSE)
            return listen_error("cannot bind", path);
        if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode)) {
            fprintf(stderr, "vhdx serve: %s exists and is not a socket\n", path);
            return EXIT_USAGE;
        }
        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0) {
            stale = connect(probe, (struct sockaddr *)&address, sizeof address) != 0 &&
                    errno == ECONNREFUSED;
            close(probe);
        }
        if (!stale) {
            fprintf(stderr, "vhdx serve: %s: another server is listening there\n", path);
            return EXIT_USAGE;
        }
        if (unlink(path) != 0 || bind(l->fd, (struct sockaddr *)&address, sizeof address) != 0)
            return listen_error("cannot bind", path);
    }
    l->socket_path = path;
    if (listen(l->fd, LISTEN_BACKLOG) != 0)
        return listen_error("cannot listen on", path);
    snprintf(l->where, sizeof l->where, "nbd+unix:///?socket=%s", path);
    return 0;
}

static int listen_tcp(const char *host, uint64_t port, struct listener *l)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *found;
    struct sockaddr_storage bound;
    socklen_t bound_length = sizeof bound;
    char port_text[8], host_text[NI_MAXHOST], bound_port[NI_MAXSERV];
    int one = 1, rc;

    if (port > 65535) {
        fprintf(stderr, "vhdx serve: --port %" PRIu64 ": not a TCP port (0 to 65535)\n", port);
        return EXIT_USAGE;
    }
    snprintf(port_text, sizeof port_text, "%u", (unsigned)port);
    rc = getaddrinfo(host, port_text, &hints, &found);
    if (rc) {
        fprintf(stderr, "vhdx serve: --bind %s: %s\n", host, gai_strerror(rc));
        return EXIT_USAGE;
    }
    l->tcp = true;
    l->fd = socket(found->ai_family, found->ai_socktype | SOCK_CLOEXEC, found->ai_protocol);
    if (l->fd < 0) {
        freeaddrinfo(found);
        return listen_error("cannot create a socket for", host);
    }
    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    rc = bind(l->fd, found->ai_addr, found->ai_addrlen);
    freeaddrinfo(found);
    if (rc != 0 || listen(l->fd, LISTEN_BACKLOG) != 0) {
        char where[NI_MAXHOST + 16];

        snprintf(where, sizeof where, "%s port %s", host, port_text);
        return listen_error("cannot listen on", where);
    }
    /* The port actually bound (--port 0 picks a free one). */
    if (getsockname(l->fd, (struct sockaddr *)&bound, &bound_length) != 0 ||
        getnameinfo((struct sockaddr *)&bound, bound_length, host_text, sizeof host_text,
                    bound_port, sizeof bound_port, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return listen_error("cannot read the address of", host);
    snprintf(l->where, sizeof l->where, strchr(host_text, ':') ? "nbd://[%s]:%s" : "nbd://%s:%s",
             host_text, bound_port);
    return 0;
}

/* One connection from accept to close. */
static void serve_connection(struct nbd_conn *conn, int fd, bool tcp, unsigned long number,
                             int verbosity)
{
    int one = 1, end;

    if (tcp)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    conn->fd = fd;
    end = nbd_handshake(conn);
    if (end < 0)
        end = nbd_transmit(conn);
    /* The unusual ends always; the ordinary ones with -v. */
    if (verbosity > 0 || end == NBD_END_PROTOCOL || end == NBD_END_SOCKET ||
        end == NBD_END_TIMEOUT)
        fprintf(stderr, "vhdx serve: %s: connection %lu: %s%s%s (%" PRIu64 " requests, %"
                PRIu64 " refused or failed)\n", conn->export->image, number,
                nbd_end_text((enum nbd_end)end), conn->why[0] ? ": " : "", conn->why,
                conn->requests, conn->failed_requests);
    close(fd);
    conn->fd = -1;
}

static const char *type_text(enum vhdx_disk_type type)
{
    return type == VHDX_TYPE_FIXED ? "fixed" : type == VHDX_TYPE_DYNAMIC ? "dynamic"
                                                                         : "differencing";
}

int cmd_serve(const struct options *o)
{
    struct session s;
    struct vhdx_info info;
    struct nbd_export export;
    struct nbd_conn conn;
    struct listener l = { .fd = -1 };
    struct sigaction action = { .sa_handler = on_stop_signal };   /* no SA_RESTART */
    sigset_t stop_signals, saved_mask, wait_mask;
    char what[96], description[600];
    unsigned long connections = 0;
    int status, close_status;

    if (!(o->given & OPT_SOCKET) == !(o->given & OPT_PORT))
        return usage_error("%s", "serve needs one of --socket PATH or --port N");
    if ((o->given & OPT_BIND) && !(o->given & OPT_PORT))
        return usage_error("%s", "--bind goes with --port");

    status = open_image(&s, o, !(o->given & OPT_READ_ONLY), 0);
    if (status)
        return status;
    vhdx_get_info(s.disk, &info);
    nbd_export_init(&export, s.disk, o->image, o->given & OPT_READ_ONLY);
    snprintf(what, sizeof what, "%s VHDX, %" PRIu32 "-byte sectors, %s", type_text(info.type),
             info.logical_sector_size, export.read_only ? "read-only" : "read-write");
    snprintf(description, sizeof description, "%s: %s", o->image, what);
    export.description = description;
    if (nbd_conn_init(&conn)) {
        fprintf(stderr, "vhdx serve: %s: out of memory for the request buffer\n", o->image);
        close_image(&s, o->image);
        return EXIT_USAGE;
    }

    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_signals, &saved_mask);
    wait_mask = saved_mask;
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    signal(SIGPIPE, SIG_IGN);           /* a vanished client is a return code, not a death */
    conn.export = &export;
    conn.wait_mask = &wait_mask;
    conn.stop = &stop_signal;
    conn.verbosity = o->verbosity;

    status = o->given & OPT_SOCKET ? listen_unix(o->socket_path, &l)
                                   : listen_tcp(o->given & OPT_BIND ? o->bind_address
                                                                    : "127.0.0.1", o->port, &l);
    if (!status) {
        fprintf(stderr, "vhdx serve: %s: serving %" PRIu64 " bytes (%s) on %s; "
                "SIGTERM or Ctrl-C stops\n", o->image, export.size, what, l.where);
        while (!stop_signal) {
            struct pollfd p = { .fd = l.fd, .events = POLLIN };
            int fd;

            if (ppoll(&p, 1, NULL, &wait_mask) < 0)
                continue;               /* EINTR: a stop signal, checked above */
            fd = accept4(l.fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
                    /* Out of descriptors or memory: say so, and do not spin on it. */
                    fprintf(stderr, "vhdx serve: accept: %s\n", strerror(errno));
                    usleep(100000);
                }
                continue;
            }
            serve_connection(&conn, fd, l.tcp, ++connections, o->verbosity);
        }
        fprintf(stderr, "vhdx serve: %s: %s after %lu connections: flushing and closing "
                "the image\n", o->image, strsignal(stop_signal), connections);
    }
    if (l.fd >= 0)
        close(l.fd);
    if (l.socket_path)
        unlink(l.socket_path);
    nbd_conn_free(&conn);
    close_status = close_image(&s, o->image);
    sigprocmask(SIG_SETMASK, &saved_mask, NULL);
    return status ? status : close_status;
}

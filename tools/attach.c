/*
 * attach.c - the kernel's NBD driver on a VHDX, with no network and no handshake:
 *
 *   vhdx attach IMAGE [/dev/nbdN] [--read-only] [--background] [--dead-timeout S]
 *   vhdx attach IMAGE /dev/nbdN --reconnect  take over from a server that died
 *   vhdx attach --firmware [--dry-run]      what the firmware (or vhdx=) handed over
 *   vhdx detach /dev/nbdN | --all
 *   /run/initramfs/shutdown ACTION          this program under that name (see below)
 *
 * How a disk is attached (linux/nbd-netlink.h; ../shared/docs/os-handoff.md): a
 * socketpair, and one NBD_CMD_CONNECT message of the kernel's "nbd" generic netlink
 * family hands one end to the driver with the size, the block size (the logical sector),
 * the transmission flags, the dead-connection timeout and the backend identifier
 * "vhdx:{VirtualDiskId}" (/sys/block/nbdN/backend); the main thread serves the other
 * end with tools/nbd_server.c's transmission loop.  Netlink, not the ioctl setup: with
 * ioctls a task must sit in NBD_DO_IT, an interruptible wait that any signal ends by
 * shutting the device's socket down - and systemd's shutdown sends SIGSTOP to every
 * process (kill(-1)) before it spares the '@' ones, which tore the root file system off
 * its disk in the Debian test.  No request timeout is set: a stalled request is logged, not
 * fatal.  A second thread opens the device once, which makes the kernel read its
 * partition table, so the partitions exist when attach says the disk is ready.
 * NBD_CMD_DISC (`vhdx detach`, or a signal in the foreground) ends the loop; the image
 * is flushed and closed, so its log is clean.
 *
 * A server that dies (kill -9, a crash): NBD_ATTR_DEAD_CONN_TIMEOUT (120 s, or
 * --dead-timeout) makes the kernel keep the device and hold its I/O for a new server;
 * `--reconnect` is one: it hands the device a new socket with NBD_CMD_RECONFIGURE.
 * What the kernel does (drivers/block/nbd.c, the same in Linux 6.1 and mainline):
 *   - the receive thread reads EOF and marks the connection dead; the requests the
 *     server had been sent stay in flight; the device keeps its configuration, its
 *     size and its pid file (which keeps naming the first server);
 *   - a request dispatched meanwhile waits in nbd_handle_cmd (wait_for_reconnect) for
 *     a socket or the timeout, then goes to the new socket;
 *   - a request the dead server never answered is re-sent to the new one when its
 *     block-layer timer fires (nbd_xmit_timeout; with no request timeout that timer is
 *     30 s: the connection's cookie changed, so the request is requeued), so a stalled
 *     writer resumes up to 30 s after the takeover;
 *   - when nothing takes over within the timeout, the waiting and all new requests fail
 *     with EIO (a root file system is then lost: ext4 aborts its journal); those the
 *     dead server had in flight stay pending until a late --reconnect (still accepted)
 *     or a disconnect;
 *   - RECONFIGURE whose socket finds no dead connection succeeds and drops the socket,
 *     which the new server sees as a hang-up: it refuses (the connection is alive); a
 *     different backend identifier is refused (EINVAL).
 * Data: a request without a reply is re-sent whole, and every request is idempotent
 * (WRITE, WRITE_ZEROES, TRIM, FLUSH).  What a reply acknowledged must outlive the
 * server, since the kernel does not know that another one took over: data written in
 * place is in the host kernel once pwrite returns, but the core keeps BAT changes in
 * memory until a flush, so a write into a new block acknowledged after the last FLUSH
 * would vanish while the next FLUSH, answered by the new server, tells the file system
 * it is durable.  So with a dead-connection timeout the server flushes before it
 * replies to a request that changed the BAT (once per allocated or freed block;
 * in-place writes cost nothing).  Writes acknowledged before a FLUSH reply are durable
 * in the image anyway (the core's contract), and the new server replays the log the
 * dead one left dirty.  --reconnect checks, before anything is written (the image is
 * opened read-only for it): the device is configured, its server is gone (the pid
 * file's process, and the one an earlier --reconnect recorded in /run/vhdx/nbdN.pid,
 * which `detach` also waits for), its backend is this image's VirtualDiskId, its size
 * and logical sector size are the image's; a read-only device is served read-only.
 *
 * Serving a root file system (--firmware) adds what keeps the server alive and out of
 * the way of the memory it is asked to free: PR_SET_IO_FLUSHER (its allocations never
 * wait for I/O), oom_score_adj -1000, every page locked (mlockall; the request buffers
 * are allocated once, before), the image opened with O_DIRECT, argv[0] starting with
 * '@' (systemd leaves such processes started from the initrd alive at switch-root and
 * shutdown), SIGTERM/SIGINT/SIGHUP ignored, and messages to the kernel log once the
 * console is no longer ours.
 *
 * --firmware finds the ESP partition (GPT PARTUUID or MBR signature, checked against the
 * FAT serial), mounts it in a mount namespace of the server's own (so nothing else sees
 * or remounts that mount; the FAT still has one writer, the kernel's vfat driver, which
 * shares the superblock with any other mount of the ESP), checks that the file is the
 * one the firmware closed, and attaches it in the background.  The file grows through
 * that mount when a new block needs room (ftruncate; FAT32 allows 4 GiB - 1 bytes).
 * It also copies this program to /run/initramfs/shutdown (when nothing is there): at
 * shutdown systemd pivots into /run/initramfs and runs it as /shutdown ACTION, and it
 * unmounts the old root, detaches every NBD device (each image is then flushed and
 * closed clean) and powers off, reboots or halts.  An init without that pivot runs
 * /run/initramfs/shutdown ACTION itself as its last step, and it pivots by itself.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/genetlink.h>
#include <linux/nbd-netlink.h>
#include <linux/netlink.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "handoff.h"
#include "nbd_server.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

#define NBD_MAJOR 43
#define NBD_DEVICES_MAX 256
#define ESP_MOUNT "/run/vhdx/esp"
#define SHUTDOWN_HELPER "/run/initramfs/shutdown"
#define EFIVARS "/sys/firmware/efi/efivars"
#define EFIVARFS_MAGIC 0xde5e81e4
#define STARTUP_WAIT_MS 30000           /* for the device to start, the ESP to appear */
#define DETACH_WAIT_MS 60000            /* for a server to flush, close and exit */
#define DEAD_CONN_TIMEOUT_S 120         /* how long the kernel holds I/O for a new server */
#define DEAD_CONN_TIMEOUT_MAX_S 86400
#define SERVER_RECORD "/run/vhdx/nbd%u.pid"     /* a --reconnect server's pid */
#define BACKEND_PREFIX "vhdx:"          /* + VirtualDiskId: the device's backend */

struct attach {
    const struct options *o;
    const char *image;                  /* the file opened */
    const char *name;                   /* for messages */
    bool read_only;
    bool root;                          /* serving a root file system: --firmware */
    bool reconnect;                     /* --reconnect: take over a device */
    char backend[48];                   /* BACKEND_PREFIX + the image's VirtualDiskId */
    const struct handoff_disk *handoff; /* or NULL */

    struct session s;
    struct nbd_export export;
    struct nbd_conn conn;
    int sock[2];
    unsigned index;                     /* N of /dev/nbdN */
    char device[32];
    int ready_fd;                       /* to the waiting parent, or -1 (foreground) */

    pthread_t scan_thread;
};

/* The device a stop signal disconnects (foreground attach), or -1. */
static volatile sig_atomic_t disconnect_index = -1;

/* ------------------------------------------------------------------------------------ */
/* Messages.                                                                             */

__attribute__((format(printf, 2, 3)))
static void say(const struct attach *a, const char *fmt, ...)
{
    char line[600];
    va_list args;
    int n = snprintf(line, sizeof line, "vhdx attach: %s: ", a->name);

    va_start(args, fmt);
    if (n > 0 && (size_t)n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, args);
    va_end(args);
    /* One write per line: on /dev/kmsg each write is one record. */
    n = (int)strnlen(line, sizeof line - 2);
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* Nowhere left to say it. */
    }
}

/* Tell the waiting parent (background) how it went: "OK device" or "ERR status text". */
static void report_ready(struct attach *a, int status, const char *text)
{
    char line[700];
    int n;

    if (a->ready_fd < 0) {
        if (status)
            fprintf(stderr, "%s\n", text);
        return;
    }
    n = status ? snprintf(line, sizeof line, "ERR %d %s\n", status, text)
               : snprintf(line, sizeof line, "OK %s\n", text);
    if (write(a->ready_fd, line, (size_t)n) < 0) {
        /* The parent is gone: nothing to tell. */
    }
    close(a->ready_fd);
    a->ready_fd = -1;
}

/* Root mode: from now on stderr is the kernel log (the console belongs to the OS). */
static void messages_to_kmsg(void)
{
    int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);

    if (fd < 0)
        return;
    dup2(fd, STDERR_FILENO);
    close(fd);
}

/* ------------------------------------------------------------------------------------ */
/* Small helpers.                                                                        */

static int64_t now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec t = { ms / 1000, (long)(ms % 1000) * 1000000L };

    nanosleep(&t, NULL);
}

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* mkdir -p */
static int make_directory(const char *path, mode_t mode)
{
    char copy[PATH_MAX];

    snprintf(copy, sizeof copy, "%s", path);
    for (char *p = copy + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(copy, mode) && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(copy, mode) && errno != EEXIST ? -1 : 0;
}

/* The index N of "/dev/nbdN" (the path must name an NBD block device). */
static bool nbd_index(const char *device, unsigned *index, char *why, size_t size)
{
    struct stat st;
    const char *base = strrchr(device, '/');

    base = base ? base + 1 : device;
    if (stat(device, &st)) {
        snprintf(why, size, "%s: %s", device, strerror(errno));
        return false;
    }
    if (!S_ISBLK(st.st_mode) || major(st.st_rdev) != NBD_MAJOR ||
        sscanf(base, "nbd%u", index) != 1 || strchr(base, 'p')) {
        snprintf(why, size, "%s is not an NBD device (/dev/nbdN)", device);
        return false;
    }
    return true;
}

/* Is /dev/nbdN running (a server attached)?  Its pid file exists while it is. */
static bool nbd_running(unsigned index, pid_t *pid)
{
    char path[64], text[32];

    snprintf(path, sizeof path, "/sys/block/nbd%u/pid", index);
    if (!read_first_line(path, text, sizeof text))
        return false;
    if (pid)
        *pid = (pid_t)strtol(text, NULL, 10);
    return true;
}

/* The process of a thread (the pid file names the thread that connected the device). */
static pid_t thread_group(pid_t pid)
{
    char path[64], text[4096], *p;
    pid_t tgid = pid;
    int fd;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, text, sizeof text - 1);

        close(fd);
        text[n > 0 ? n : 0] = 0;
        if ((p = strstr(text, "\nTgid:")))
            tgid = (pid_t)strtol(p + 6, NULL, 10);
    }
    return tgid;
}

static bool process_gone(pid_t pid);
static bool mounted_where(unsigned index, char *where, size_t size);

/*
 * The live server of /dev/nbdN: the process that connected it (its pid file), or else
 * the one a --reconnect recorded (the kernel keeps the first pid); 0 when both are gone:
 * the server died and nothing took over (the kernel holds the device's I/O meanwhile).
 */
static pid_t server_pid(unsigned index)
{
    char path[64], text[32];
    pid_t pid = 0;

    if (nbd_running(index, &pid) && pid > 0 && !process_gone(pid = thread_group(pid)))
        return pid;
    snprintf(path, sizeof path, SERVER_RECORD, index);
    if (read_first_line(path, text, sizeof text) &&
        (pid = (pid_t)strtol(text, NULL, 10)) > 0 && !process_gone(pid))
        return pid;
    return 0;
}

static void write_server_record(const char *path)
{
    char text[24];
    int fd, n = snprintf(text, sizeof text, "%d\n", (int)getpid());

    if (make_directory("/run/vhdx", 0755))
        return;
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0 && write(fd, text, (size_t)n) != n) {
        /* detach then finds no server to wait for: it still disconnects. */
    }
    if (fd >= 0)
        close(fd);
}

/* What the kernel keeps as the device's backend (/sys/block/nbdN/backend) and compares
 * at NBD_CMD_RECONFIGURE: the VirtualDiskId, which names the disk whatever its path. */
static void disk_backend(const struct vhdx_info *info, char backend[48])
{
    char id[39];

    vhdx_guid_format(&info->virtual_disk_id, id);
    snprintf(backend, 48, BACKEND_PREFIX "%s", id);
}

/* ------------------------------------------------------------------------------------ */
/* The kernel side: the "nbd" generic netlink family (linux/nbd-netlink.h).              */

#define NL_BUFFER 4096

struct nl_message {
    uint8_t bytes[NL_BUFFER];
    size_t length;
};

static void nl_start(struct nl_message *m, uint16_t type, uint8_t command, uint8_t version)
{
    struct nlmsghdr *h = (struct nlmsghdr *)(void *)m->bytes;
    struct genlmsghdr *g = (struct genlmsghdr *)(void *)(m->bytes + NLMSG_HDRLEN);

    memset(m->bytes, 0, sizeof m->bytes);
    h->nlmsg_type = type;
    h->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    h->nlmsg_seq = 1;
    g->cmd = command;
    g->version = version;
    m->length = NLMSG_HDRLEN + GENL_HDRLEN;
}

/* An attribute; returns its offset (for nesting). */
static size_t nl_put(struct nl_message *m, uint16_t type, const void *data, size_t length)
{
    struct nlattr *a = (struct nlattr *)(void *)(m->bytes + m->length);
    size_t at = m->length;

    a->nla_type = type;
    a->nla_len = (uint16_t)(NLA_HDRLEN + length);
    if (length)
        memcpy(m->bytes + m->length + NLA_HDRLEN, data, length);
    m->length += NLA_ALIGN(NLA_HDRLEN + length);
    return at;
}

static void nl_put_u32(struct nl_message *m, uint16_t type, uint32_t value)
{
    nl_put(m, type, &value, sizeof value);
}

static void nl_put_u64(struct nl_message *m, uint16_t type, uint64_t value)
{
    nl_put(m, type, &value, sizeof value);
}

/* Close a nested attribute opened with nl_put(m, type | NLA_F_NESTED, NULL, 0). */
static void nl_end_nest(struct nl_message *m, size_t at)
{
    ((struct nlattr *)(void *)(m->bytes + at))->nla_len = (uint16_t)(m->length - at);
}

/*
 * Send a request and read the answer: 0 and the first reply's attributes (in `reply`,
 * `reply_length`), or an errno value (the kernel's NLMSG_ERROR, or a socket error).
 */
static int nl_talk(int fd, struct nl_message *m, uint8_t *reply, size_t *reply_length)
{
    struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
    uint8_t in[NL_BUFFER];
    ssize_t n;

    ((struct nlmsghdr *)(void *)m->bytes)->nlmsg_len = (uint32_t)m->length;
    if (sendto(fd, m->bytes, m->length, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0)
        return errno;
    *reply_length = 0;
    for (;;) {
        n = recv(fd, in, sizeof in, 0);
        if (n < 0)
            return errno == EINTR ? EINTR : errno;
        for (struct nlmsghdr *h = (struct nlmsghdr *)(void *)in; NLMSG_OK(h, (size_t)n);
             h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);

                return e->error < 0 ? -e->error : 0;    /* the ACK ends the exchange */
            }
            if (h->nlmsg_len > NLMSG_HDRLEN + GENL_HDRLEN && !*reply_length) {
                size_t length = h->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN;

                if (length > NL_BUFFER)
                    length = NL_BUFFER;
                memcpy(reply, (uint8_t *)h + NLMSG_HDRLEN + GENL_HDRLEN, length);
                *reply_length = length;
            }
        }
    }
}

/* The first attribute `type` in a reply's attributes, or NULL. */
static const uint8_t *nl_find(const uint8_t *attrs, size_t length, uint16_t type,
                              size_t *size)
{
    size_t at = 0;

    while (at + NLA_HDRLEN <= length) {
        const struct nlattr *a = (const struct nlattr *)(const void *)(attrs + at);

        if (a->nla_len < NLA_HDRLEN || at + a->nla_len > length)
            break;
        if ((a->nla_type & NLA_TYPE_MASK) == type) {
            *size = a->nla_len - NLA_HDRLEN;
            return attrs + at + NLA_HDRLEN;
        }
        at += NLA_ALIGN(a->nla_len);
    }
    return NULL;
}

/* The id of the "nbd" generic netlink family: 0 and *id, or an errno value. */
static int nbd_family(int fd, uint16_t *id)
{
    struct nl_message m;
    uint8_t reply[NL_BUFFER];
    size_t length, size;
    const uint8_t *value;
    int err;

    nl_start(&m, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1);
    nl_put(&m, CTRL_ATTR_FAMILY_NAME, NBD_GENL_FAMILY_NAME, sizeof NBD_GENL_FAMILY_NAME);
    err = nl_talk(fd, &m, reply, &length);
    if (err)
        return err;
    value = nl_find(reply, length, CTRL_ATTR_FAMILY_ID, &size);
    if (!value || size < 2)
        return ENOENT;
    memcpy(id, value, 2);
    return 0;
}

/* The dead-connection timeout this attach asks for, in seconds. */
static uint64_t dead_conn_timeout(const struct attach *a)
{
    return a->o->given & OPT_DEAD_TIMEOUT ? a->o->dead_timeout : DEAD_CONN_TIMEOUT_S;
}

/*
 * One end of the socketpair to /dev/nbd<index>: NBD_CMD_CONNECT (index < 0: the kernel
 * takes a free device, or makes one) with the geometry, the flags, the dead-connection
 * timeout and the backend identifier; or NBD_CMD_RECONFIGURE (--reconnect), which the
 * kernel refuses when the identifier differs, and which hands the socket to the
 * device's dead connection (a timeout given with it replaces the old one).  0 and
 * a->index, or an errno value.
 */
static int nbd_configure(struct attach *a, uint8_t command, int index)
{
    const struct nbd_export *e = &a->export;
    struct nl_message m;
    uint8_t reply[NL_BUFFER];
    size_t length, size, sockets, item;
    const uint8_t *value;
    uint16_t family;
    uint32_t got;
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC), err;

    if (fd < 0)
        return errno;
    err = nbd_family(fd, &family);
    if (!err) {
        nl_start(&m, family, command, NBD_GENL_VERSION);
        if (index >= 0)
            nl_put_u32(&m, NBD_ATTR_INDEX, (uint32_t)index);
        if (command == NBD_CMD_CONNECT) {
            nl_put_u64(&m, NBD_ATTR_SIZE_BYTES, e->size);
            nl_put_u64(&m, NBD_ATTR_BLOCK_SIZE_BYTES, e->sector_size);
            nl_put_u64(&m, NBD_ATTR_SERVER_FLAGS, nbd_transmission_flags(e));
        }
        if (command == NBD_CMD_CONNECT || (a->o->given & OPT_DEAD_TIMEOUT))
            nl_put_u64(&m, NBD_ATTR_DEAD_CONN_TIMEOUT, dead_conn_timeout(a));
        nl_put(&m, NBD_ATTR_BACKEND_IDENTIFIER, a->backend, strlen(a->backend) + 1);
        sockets = nl_put(&m, NBD_ATTR_SOCKETS | NLA_F_NESTED, NULL, 0);
        item = nl_put(&m, NBD_SOCK_ITEM | NLA_F_NESTED, NULL, 0);
        nl_put_u32(&m, NBD_SOCK_FD, (uint32_t)a->sock[0]);
        nl_end_nest(&m, item);
        nl_end_nest(&m, sockets);
        err = nl_talk(fd, &m, reply, &length);
    }
    if (!err) {
        value = nl_find(reply, length, NBD_ATTR_INDEX, &size);
        if (value && size == 4) {
            memcpy(&got, value, 4);
            a->index = got;
        } else {
            a->index = index >= 0 ? (unsigned)index : 0;
        }
    }
    close(fd);
    return err;
}

/*
 * NBD_CMD_DISCONNECT for /dev/nbd<index>: the kernel sends NBD_CMD_DISC to the server,
 * after the requests already sent, and drops the device's configuration once the server
 * has closed its end.  0 or an errno value.  Async-signal-safe (system calls and
 * memory copies only): a stop signal calls it.
 */
static int disconnect_device(unsigned index)
{
    struct nl_message m;
    uint8_t reply[NL_BUFFER];
    size_t length;
    uint16_t family;
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC), err;

    if (fd < 0)
        return errno;
    err = nbd_family(fd, &family);
    if (!err) {
        nl_start(&m, family, NBD_CMD_DISCONNECT, NBD_GENL_VERSION);
        nl_put_u32(&m, NBD_ATTR_INDEX, index);
        err = nl_talk(fd, &m, reply, &length);
    }
    close(fd);
    return err;
}

/*
 * The device runs once its pid file appears; opening it then makes the kernel read the
 * partition table (answered by the main thread), so the partitions exist afterwards.
 */
static void *scan_partitions(void *context)
{
    struct attach *a = context;
    int64_t deadline = now_ms() + STARTUP_WAIT_MS;
    char text[200];
    int fd;

    while (!nbd_running(a->index, NULL)) {
        if (now_ms() >= deadline) {
            snprintf(text, sizeof text, "vhdx attach: %s: %s did not start within %d s",
                     a->name, a->device, STARTUP_WAIT_MS / 1000);
            report_ready(a, EXIT_USAGE, text);
            disconnect_device(a->index);
            return NULL;
        }
        sleep_ms(20);
    }
    fd = open(a->device, O_RDONLY | O_CLOEXEC);
    if (fd >= 0)
        close(fd);
    if (a->ready_fd < 0)
        printf("%s\n", a->device);
    else
        report_ready(a, 0, a->device);
    fflush(stdout);
    say(a, "%s %s (%" PRIu64 " bytes, %" PRIu32 "-byte sectors, %s)%s",
        a->reconnect ? "took over" : "attached as", a->device,
        a->export.size, a->export.sector_size, a->export.read_only ? "read-only" : "read-write",
        a->root ? "" : "; `vhdx detach` ends it");
    if (a->root)
        messages_to_kmsg();
    return NULL;
}

/*
 * The kernel answers a RECONFIGURE whose socket found no dead connection with success,
 * and drops the socket: then ours is the last reference, and closing it hangs up the
 * other end at once.  (The kernel holds its own reference to a socket it took.)
 */
static bool kernel_took_socket(struct attach *a)
{
    struct pollfd p = { .fd = a->sock[1], .events = POLLRDHUP };

    close(a->sock[0]);
    a->sock[0] = -1;
    return poll(&p, 1, 0) == 0 || !(p.revents & (POLLHUP | POLLRDHUP));
}

/* Connect /dev/nbdN (the one given, or one the kernel picks), or hand it a new socket
 * (--reconnect): 0, or an exit status with `why`. */
static int start_device(struct attach *a, const char *wanted, char *why, size_t size)
{
    unsigned index = 0;
    int err;

    if (wanted && !nbd_index(wanted, &index, why, size))
        return EXIT_USAGE;
    err = nbd_configure(a, a->reconnect ? NBD_CMD_RECONFIGURE : NBD_CMD_CONNECT,
                        wanted ? (int)index : -1);
    if (!err && a->reconnect && !kernel_took_socket(a)) {
        snprintf(why, size, "%s: its connection is alive (no dead server to take over)",
                 wanted);
        return EXIT_USAGE;
    }
    if (err) {
        if (wanted && err == EBUSY)
            snprintf(why, size, "%s: in use (another server is attached)", wanted);
        else if (err == ENOENT || err == EAFNOSUPPORT || err == EPROTONOSUPPORT)
            snprintf(why, size, "the kernel has no NBD driver: load the nbd module "
                     "(modprobe nbd)");
        else if (a->reconnect && err == EINVAL)
            snprintf(why, size, "%s: the NBD driver refused the new connection (it serves "
                     "another disk, or was disconnected meanwhile)", wanted);
        else
            snprintf(why, size, "%s%sthe NBD driver refused the connection: %s",
                     wanted ? wanted : "", wanted ? ": " : "", strerror(err));
        return EXIT_USAGE;
    }
    snprintf(a->device, sizeof a->device, "/dev/nbd%u", a->index);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Serving.                                                                              */

static void on_stop_signal(int signal_number)
{
    int saved = errno;

    (void)signal_number;
    if (disconnect_index >= 0)
        disconnect_device((unsigned)disconnect_index);
    errno = saved;
}

/* Root mode: stay alive and responsive when memory is short (os-handoff.md). */
static void harden(struct attach *a)
{
    int fd;

    if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0))
        say(a, "warning: PR_SET_IO_FLUSHER: %s", strerror(errno));
    fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "-1000", 5) != 5)
        say(a, "warning: oom_score_adj: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
    if (mlockall(MCL_CURRENT | MCL_FUTURE))
        say(a, "warning: mlockall: %s", strerror(errno));
}

/* Open the image, attach it, serve it until disconnected, close it.  Exit status. */
static int attach_and_serve(struct attach *a, const char *wanted_device)
{
    struct sigaction action = { .sa_handler = on_stop_signal };
    sigset_t stop_signals, saved_mask, wait_mask;
    char why[HANDOFF_WHY_MAX + 80];
    enum nbd_end end;
    struct vhdx_info info;
    char record[64];
    int status, close_status;

    status = open_image_with(&a->s, a->o, a->image, !a->read_only, 0, POSIX_DIRECT);
    if (status) {
        report_ready(a, status, "vhdx attach: the image could not be opened (above)");
        return status;
    }
    /* The chain served is the one checked (the probe's files, not others found since). */
    if (a->handoff && !handoff_chain_matches(a->handoff, a->s.disk, why)) {
        char text[sizeof why + 200];

        snprintf(text, sizeof text, "vhdx attach: %s: not attached: %s", a->name, why);
        report_ready(a, EXIT_INVALID, text);
        close_image(&a->s, a->name);
        return EXIT_INVALID;
    }
    vhdx_get_info(a->s.disk, &info);
    disk_backend(&info, a->backend);
    nbd_export_init(&a->export, a->s.disk, a->name, a->read_only);
    if (a->export.sector_size > 4096 || nbd_conn_init(&a->conn)) {
        snprintf(why, sizeof why, "vhdx attach: %s: %s", a->name, a->export.sector_size > 4096
                 ? "sectors over 4096 bytes" : "out of memory for the request buffers");
        report_ready(a, EXIT_USAGE, why);
        close_image(&a->s, a->name);
        return EXIT_USAGE;
    }
    if (a->root)
        harden(a);

    /* Stop signals: ignored when serving a root file system; otherwise they disconnect
     * the device (the same as `vhdx detach`), delivered only while the server waits. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGHUP);
    sigprocmask(SIG_BLOCK, &stop_signals, &saved_mask);
    wait_mask = saved_mask;
    if (!a->root) {
        sigdelset(&wait_mask, SIGTERM);
        sigdelset(&wait_mask, SIGINT);
        sigdelset(&wait_mask, SIGHUP);
    }
    sigemptyset(&action.sa_mask);
    if (a->root)
        action.sa_handler = SIG_IGN;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGHUP, &action, NULL);
    signal(SIGPIPE, SIG_IGN);

    status = EXIT_USAGE;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a->sock)) {
        snprintf(why, sizeof why, "vhdx attach: socketpair: %s", strerror(errno));
        report_ready(a, EXIT_USAGE, why);
        goto err_socket;
    }
    if (start_device(a, wanted_device, why + 200, 200)) {
        char text[420];

        snprintf(text, sizeof text, "vhdx attach: %s: %s", a->name, why + 200);
        report_ready(a, EXIT_USAGE, text);
        goto err_device;
    }
    disconnect_index = (int)a->index;
    snprintf(record, sizeof record, SERVER_RECORD, a->index);
    if (a->reconnect)
        write_server_record(record);
    if (pthread_create(&a->scan_thread, NULL, scan_partitions, a)) {
        disconnect_device(a->index);
        a->scan_thread = 0;
    }
    a->conn.fd = a->sock[1];
    a->conn.export = &a->export;
    a->conn.wait_mask = &wait_mask;
    a->conn.stop = NULL;                /* only a disconnect ends it */
    a->conn.verbosity = a->o->verbosity;
    a->conn.flush_metadata_before_reply = a->reconnect || dead_conn_timeout(a) > 0;
    end = nbd_transmit(&a->conn);
    shutdown(a->sock[1], SHUT_RDWR);
    if (a->scan_thread)
        pthread_join(a->scan_thread, NULL);
    disconnect_index = -1;
    if (a->reconnect)
        unlink(record);
    status = end == NBD_END_DISCONNECT || end == NBD_END_CLOSED ? 0 : EXIT_USAGE;
    if (status)
        say(a, "%s ended: %s%s%s", a->device, nbd_end_text(end), a->conn.why[0] ? ": " : "",
            a->conn.why);
err_device:
    close(a->sock[0]);
    close(a->sock[1]);
err_socket:
    nbd_conn_free(&a->conn);
    close_status = close_image(&a->s, a->name);
    if (!close_status && !status)
        say(a, "detached from %s; the image is flushed and closed (%" PRIu64 " requests, %"
            PRIu64 " refused or failed)", a->device, a->conn.requests, a->conn.failed_requests);
    sigprocmask(SIG_SETMASK, &saved_mask, NULL);
    return status ? status : close_status;
}

/*
 * --background (and --firmware): the server runs in a child of its own session; the
 * parent waits until the device is ready (or failed), prints the device, and exits.
 * `prepare` runs in the child first (the firmware path finds and mounts the ESP there,
 * inside the child's own mount namespace).
 */
static int run_in_background(struct attach *a, const char *wanted,
                             int (*prepare)(struct attach *a))
{
    int ready[2], status;
    char line[800];
    ssize_t n, got = 0;
    pid_t child;

    fflush(NULL);
    if (pipe2(ready, O_CLOEXEC)) {
        fprintf(stderr, "vhdx attach: pipe: %s\n", strerror(errno));
        return EXIT_USAGE;
    }
    child = fork();
    if (child < 0) {
        fprintf(stderr, "vhdx attach: fork: %s\n", strerror(errno));
        return EXIT_USAGE;
    }
    if (child == 0) {
        int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

        close(ready[0]);
        a->ready_fd = ready[1];
        setsid();
        if (fd >= 0) {
            dup2(fd, STDIN_FILENO);
            dup2(fd, STDOUT_FILENO);
            close(fd);
        }
        if (chdir("/")) {
            /* Nothing depends on the directory. */
        }
        status = prepare ? prepare(a) : 0;
        if (!status)
            status = attach_and_serve(a, wanted);
        _exit(status);
    }
    close(ready[1]);
    while (got + 1 < (ssize_t)sizeof line &&
           (n = read(ready[0], line + got, sizeof line - 1 - (size_t)got)) > 0)
        got += n;
    close(ready[0]);
    line[got] = 0;
    line[strcspn(line, "\n")] = 0;
    if (!strncmp(line, "OK ", 3)) {
        printf("%s\n", line + 3);
        return 0;
    }
    if (!strncmp(line, "ERR ", 4)) {
        char *text = strchr(line + 4, ' ');

        status = atoi(line + 4);
        fprintf(stderr, "%s\n", text ? text + 1 : line);
        waitpid(child, NULL, 0);
        return status ? status : EXIT_USAGE;
    }
    waitpid(child, &status, 0);
    fprintf(stderr, "vhdx attach: %s: the server ended before the disk was attached "
            "(status %d)\n", a->name, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return EXIT_USAGE;
}

/* ------------------------------------------------------------------------------------ */
/* --reconnect.                                                                          */

__attribute__((format(printf, 3, 4)))
static int refuse_reconnect(struct attach *a, int status, const char *fmt, ...)
{
    char why[500], text[700];
    va_list args;

    va_start(args, fmt);
    vsnprintf(why, sizeof why, fmt, args);
    va_end(args);
    snprintf(text, sizeof text, "vhdx attach: %s: not reconnected, nothing written: %s",
             a->name, why);
    report_ready(a, status, text);
    return status;
}

/* A number from a sysfs file of /dev/nbd<index> (0 when unreadable). */
static uint64_t nbd_attribute(unsigned index, const char *name)
{
    char path[80], text[32];

    snprintf(path, sizeof path, "/sys/block/nbd%u/%s", index, name);
    return read_first_line(path, text, sizeof text) ? strtoull(text, NULL, 10) : 0;
}

/*
 * Before anything is written (the image is opened read-only here): the device is
 * configured (the kernel keeps it while it waits for a new server), its server is gone,
 * vhdx attach connected it to this disk (the backend names the VirtualDiskId), and its
 * size and logical sector size are the image's.  A read-only device stays read-only.
 * A server taking over the root file system (a partition mounted on /) is hardened as
 * --firmware's.
 */
static int prepare_reconnect(struct attach *a)
{
    const char *device = a->o->device;
    char why[200], path[64], backend[64] = "", wanted[48], where[2048];
    struct session probe;
    struct vhdx_info info;
    uint64_t bytes, sector_size;
    unsigned index;
    pid_t pid;
    int status;

    if (!nbd_index(device, &index, why, sizeof why))
        return refuse_reconnect(a, EXIT_USAGE, "%s", why);
    if (!nbd_running(index, NULL))
        return refuse_reconnect(a, EXIT_USAGE, "%s is not attached (nothing to take over: "
                                "attach it without --reconnect)", device);
    if ((pid = server_pid(index)))
        return refuse_reconnect(a, EXIT_USAGE, "%s is served by pid %d, which is running "
                                "(--reconnect takes over from a server that died)", device,
                                (int)pid);
    snprintf(path, sizeof path, "/sys/block/nbd%u/backend", index);
    if (!read_first_line(path, backend, sizeof backend) ||
        strncmp(backend, BACKEND_PREFIX, strlen(BACKEND_PREFIX)))
        return refuse_reconnect(a, EXIT_USAGE, "%s was not attached by vhdx attach (its "
                                "backend is '%s')", device, backend);
    status = open_image_with(&probe, a->o, a->image, false, 0, 0);
    if (status)
        return refuse_reconnect(a, status, "the image could not be opened (above)");
    vhdx_get_info(probe.disk, &info);
    close_image(&probe, a->name);
    disk_backend(&info, wanted);
    if (strcmp(backend, wanted))
        return refuse_reconnect(a, EXIT_USAGE, "%s serves another disk (%s; this image is "
                                "%s)", device, backend, wanted);
    bytes = nbd_attribute(index, "size") * 512;
    sector_size = nbd_attribute(index, "queue/logical_block_size");
    if (bytes != info.virtual_size || sector_size != info.logical_sector_size)
        return refuse_reconnect(a, EXIT_USAGE, "%s has %" PRIu64 " bytes in %" PRIu64
                                "-byte sectors, the image %" PRIu64 " bytes in %" PRIu32
                                "-byte sectors", device, bytes, sector_size,
                                info.virtual_size, info.logical_sector_size);
    if (nbd_attribute(index, "ro"))
        a->read_only = true;
    else if (a->read_only)
        return refuse_reconnect(a, EXIT_USAGE, "%s is read-write: served read-only, its "
                                "writes would fail", device);
    if (info.log_state != VHDX_LOG_WAS_CLEAN)
        say(a, "the log is dirty (its server died before emptying it): replaying it");
    /* Serving the root file system again: hardened as --firmware's server was. */
    a->root = mounted_where(index, where, sizeof where) && !strcmp(where, "/");
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* --firmware.                                                                           */

static char firmware_image[sizeof ESP_MOUNT + VHDX_HANDOFF_PATH_MAX + 1];

/*
 * In the server's child: find the ESP, mount it in a mount namespace of our own, check
 * the file against the record (read-only, nothing written), leave a->image set.
 */
static int prepare_firmware_disk(struct attach *a)
{
    const struct handoff_disk *d = a->handoff;
    char device[300], why[HANDOFF_WHY_MAX], text[HANDOFF_WHY_MAX + 1200];
    struct session probe;
    struct vhdx_info info;
    int status;

    unsigned wait_ms = a->o->given & OPT_WAIT ? (unsigned)(a->o->wait_seconds > 3600 ? 3600000
                       : a->o->wait_seconds * 1000) : STARTUP_WAIT_MS;

    if (handoff_find_esp(d, wait_ms, device, sizeof device, why)) {
        snprintf(text, sizeof text, "vhdx attach: %s (%s): %s", a->name, d->source, why);
        report_ready(a, EXIT_USAGE, text);
        return EXIT_USAGE;
    }
    /* A namespace of our own: the mount is ours alone, and mounts made later (the root
     * file system) are not pinned by us. */
    if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
        make_directory(ESP_MOUNT, 0700) ||
        mount(device, ESP_MOUNT, "vfat", MS_NOSUID | MS_NODEV | MS_NOEXEC |
              (d->read_only ? MS_RDONLY : 0), "")) {
        snprintf(text, sizeof text, "vhdx attach: %s: cannot mount the ESP %s (vfat) on %s: "
                 "%s", a->name, device, ESP_MOUNT, strerror(errno));
        report_ready(a, EXIT_USAGE, text);
        return EXIT_USAGE;
    }
    snprintf(firmware_image, sizeof firmware_image, "%s%s", ESP_MOUNT, d->path);
    a->image = firmware_image;
    /* The identity, before anything is written: each parent where the firmware found
     * it, then the child with the chain the core finds from it, level by level. */
    for (unsigned i = 0; i < d->parent_count; i++) {
        char parent[sizeof ESP_MOUNT + VHDX_HANDOFF_PATH_MAX + 1];

        snprintf(parent, sizeof parent, "%s%s", ESP_MOUNT, d->parents[i].path);
        status = open_image_with(&probe, a->o, parent, false, VHDX_OPEN_NO_PARENT, 0);
        if (status) {
            snprintf(text, sizeof text, "vhdx attach: %s on %s: not attached, nothing "
                     "written: its parent %s cannot be opened (above)", a->name, device,
                     d->parents[i].path);
            report_ready(a, status, text);
            return status;
        }
        vhdx_get_info(probe.disk, &info);
        close_image(&probe, parent);
        if (!handoff_parent_matches(&d->parents[i], &info, why)) {
            snprintf(text, sizeof text, "vhdx attach: %s on %s: not attached, nothing "
                     "written: its parent %s changed after the firmware read it (%s)",
                     a->name, device, d->parents[i].path, why);
            report_ready(a, EXIT_INVALID, text);
            return EXIT_INVALID;
        }
    }
    status = open_image_with(&probe, a->o, a->image, false, 0, 0);
    if (status) {
        snprintf(text, sizeof text, "vhdx attach: %s on %s: cannot be opened (above)",
                 a->name, device);
        report_ready(a, status, text);
        return status;
    }
    vhdx_get_info(probe.disk, &info);
    if (!handoff_identity_matches(d, &info, why)) {
        snprintf(text, sizeof text, "vhdx attach: %s on %s: not attached, nothing written: "
                 "the file changed after the firmware closed it (%s)", a->name, device, why);
        status = EXIT_INVALID;
    } else if (!handoff_chain_matches(d, probe.disk, why)) {
        snprintf(text, sizeof text, "vhdx attach: %s on %s: not attached, nothing written: "
                 "%s", a->name, device, why);
        status = EXIT_INVALID;
    }
    close_image(&probe, a->name);
    if (status) {
        report_ready(a, status, text);
        return status;
    }
    if (info.log_state != VHDX_LOG_WAS_CLEAN)
        say(a, "the firmware's close did not finish (the log is dirty): replaying it");
    return 0;
}

/*
 * Copy this program to /run/initramfs/shutdown unless something is there already.
 * systemd runs it only if access(X_OK) says it may, and initramfs-tools mounts /run
 * noexec: /run/initramfs gets a small tmpfs of its own (it moves into the root with
 * /run).
 */
static void install_shutdown_helper(void)
{
    struct stat run, dir;
    char buffer[65536];
    ssize_t n;
    int in, out;

    if (exists(SHUTDOWN_HELPER) || make_directory("/run/initramfs", 0755))
        return;
    if (!stat("/run", &run) && !stat("/run/initramfs", &dir) && run.st_dev == dir.st_dev &&
        mount("tmpfs", "/run/initramfs", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=8m"))
        return;
    in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    out = open(SHUTDOWN_HELPER ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    while (in >= 0 && out >= 0 && (n = read(in, buffer, sizeof buffer)) > 0)
        if (write(out, buffer, (size_t)n) != n)
            break;
    if (in >= 0)
        close(in);
    if (out >= 0 && !close(out))
        rename(SHUTDOWN_HELPER ".tmp", SHUTDOWN_HELPER);
}

/* The firmware's variables need efivarfs (a module on Debian: loaded by the scripts). */
static void mount_efivarfs(void)
{
    struct statfs st;

    if (!exists(EFIVARS) || (!statfs(EFIVARS, &st) && st.f_type == EFIVARFS_MAGIC))
        return;
    mount("efivarfs", EFIVARS, "efivarfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
}

static int cmd_attach_firmware(const struct options *o, char **argv)
{
    struct handoff_disk disks[VHDX_HANDOFF_MAX_DISKS];
    char cmdline[8192] = "", why[HANDOFF_WHY_MAX];
    unsigned count = 0;
    int worst = 0, rc;

    read_first_line("/proc/cmdline", cmdline, sizeof cmdline);
    rc = handoff_from_cmdline(cmdline, &disks[0], why);
    if (rc < 0) {
        fprintf(stderr, "vhdx attach: %s\n", why);
        return EXIT_USAGE;
    }
    if (rc > 0) {
        count = 1;                      /* the parameter wins over the variables */
    } else {
        mount_efivarfs();
        count = handoff_from_efivars(EFIVARS, disks, VHDX_HANDOFF_MAX_DISKS);
    }
    if (!count) {
        if (o->verbosity)
            fprintf(stderr, "vhdx attach: no vhdx= parameter and no disk handed over by the "
                    "firmware: nothing to attach\n");
        return 0;
    }
    for (unsigned i = 0; i < count; i++) {
        struct attach a = { .o = o, .root = true, .handoff = &disks[i], .ready_fd = -1 };
        char name[VHDX_HANDOFF_PATH_MAX + 64], id[39];

        handoff_guid_text(disks[i].partition_guid, id);
        snprintf(name, sizeof name, "%s", disks[i].path);
        a.name = name;
        a.read_only = disks[i].read_only || (o->given & OPT_READ_ONLY);
        if (o->given & OPT_DRY_RUN) {
            printf("%s: %s on the ESP %s%s%s", disks[i].source, disks[i].path,
                   disks[i].mbr ? "MBR partition" : "PARTUUID=", disks[i].mbr ? "" : id,
                   a.read_only ? ", read-only" : "");
            for (unsigned k = 0; k < disks[i].parent_count; k++)
                printf("%s%s", k ? ", " : ", over ", disks[i].parents[k].path);
            printf("\n");
            continue;
        }
        /* The child is the server: '@' at the start of argv[0] marks it for systemd. */
        char first = argv[0][0];

        argv[0][0] = '@';
        rc = run_in_background(&a, NULL, prepare_firmware_disk);
        argv[0][0] = first;
        if (rc > worst)
            worst = rc;
    }
    if (!(o->given & OPT_DRY_RUN) && worst == 0)
        install_shutdown_helper();
    return worst;
}

int cmd_attach(const struct options *o)
{
    struct attach a = { .o = o, .ready_fd = -1, .reconnect = o->given & OPT_RECONNECT };
    int status;

    if ((o->given & OPT_DEAD_TIMEOUT) && o->dead_timeout > DEAD_CONN_TIMEOUT_MAX_S)
        return usage_error("%s", "--dead-timeout: at most 86400 seconds");
    if (a.reconnect && (!o->device || (o->given & OPT_FIRMWARE)))
        return usage_error("%s", "attach --reconnect takes IMAGE and the device: attach "
                           "IMAGE /dev/nbdN --reconnect");
    if (o->given & OPT_FIRMWARE) {
        if (o->image)
            return usage_error("%s", "attach --firmware takes no IMAGE: the firmware (or "
                               "vhdx=) says which");
        return cmd_attach_firmware(o, o->argv);
    }
    if (!o->image)
        return usage_error("%s", "attach: no image given");
    if (o->given & (OPT_DRY_RUN | OPT_WAIT))
        return usage_error("%s", "--dry-run and --wait go with --firmware");
    a.image = a.name = o->image;
    a.read_only = o->given & OPT_READ_ONLY;
    if (o->given & OPT_BACKGROUND)
        return run_in_background(&a, o->device, a.reconnect ? prepare_reconnect : NULL);
    if (a.reconnect && (status = prepare_reconnect(&a)))
        return status;
    return attach_and_serve(&a, o->device);
}

/* ------------------------------------------------------------------------------------ */
/* Detaching.                                                                            */

/* Is the process gone (or a zombie)?  Reaps our own children on the way. */
static bool process_gone(pid_t pid)
{
    char path[64], text[512], *state;

    while (waitpid(-1, NULL, WNOHANG) > 0)
        continue;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (!read_first_line(path, text, sizeof text))
        return true;
    state = strrchr(text, ')');
    return state && state[1] == ' ' && (state[2] == 'Z' || state[2] == 'X');
}

/* The device numbers of /dev/nbdN and of its partitions ("43:0", "43:1", "259:3"). */
static unsigned device_numbers(unsigned index, char numbers[][24], unsigned max)
{
    char path[600], name[32];
    unsigned count = 0;
    DIR *dir;
    struct dirent *e;

    snprintf(name, sizeof name, "nbd%u", index);
    snprintf(path, sizeof path, "/sys/block/%s/dev", name);
    if (read_first_line(path, numbers[count], sizeof numbers[0]))
        count++;
    snprintf(path, sizeof path, "/sys/block/%s", name);
    dir = opendir(path);
    while (dir && count < max && (e = readdir(dir))) {
        if (strncmp(e->d_name, name, strlen(name)) || e->d_name[strlen(name)] != 'p')
            continue;
        snprintf(path, sizeof path, "/sys/block/%s/%.256s/dev", name, e->d_name);
        if (read_first_line(path, numbers[count], sizeof numbers[0]))
            count++;
    }
    if (dir)
        closedir(dir);
    return count;
}

/* Where the device or one of its partitions is mounted, for "in use" messages. */
static bool mounted_where(unsigned index, char *where, size_t size)
{
    char numbers[64][24], line[4096];
    unsigned count = device_numbers(index, numbers, 64);
    FILE *f = fopen("/proc/self/mountinfo", "re");
    bool found = false;

    while (f && !found && fgets(line, sizeof line, f)) {
        char number[24], point[2048];

        if (sscanf(line, "%*u %*u %23s %*s %2047s", number, point) != 2)
            continue;
        for (unsigned i = 0; i < count && !found; i++) {
            if (!strcmp(number, numbers[i])) {
                snprintf(where, size, "%s", point);
                found = true;
            }
        }
    }
    if (f)
        fclose(f);
    return found;
}

/* NBD_CMD_DISCONNECT one device and wait for its server to flush, close and exit. */
static int detach_one(unsigned index, bool check_mounts)
{
    char device[32], where[2048];
    pid_t tgid;
    int64_t deadline = now_ms() + DETACH_WAIT_MS;
    int err;

    snprintf(device, sizeof device, "/dev/nbd%u", index);
    if (!nbd_running(index, NULL)) {
        fprintf(stderr, "vhdx detach: %s is not attached\n", device);
        return EXIT_USAGE;
    }
    if (check_mounts && mounted_where(index, where, sizeof where)) {
        fprintf(stderr, "vhdx detach: %s is in use: mounted on %s (unmount it first)\n",
                device, where);
        return EXIT_USAGE;
    }
    tgid = server_pid(index);        /* 0: the server died */
    err = disconnect_device(index);
    if (err) {
        fprintf(stderr, "vhdx detach: %s: %s\n", device, strerror(err));
        return EXIT_USAGE;
    }
    while (nbd_running(index, NULL) || (tgid && !process_gone(tgid))) {
        if (now_ms() >= deadline) {
            fprintf(stderr, "vhdx detach: %s: the server (pid %d) did not finish within %d "
                    "s\n", device, (int)tgid, DETACH_WAIT_MS / 1000);
            return EXIT_USAGE;
        }
        sleep_ms(20);
    }
    if (tgid)
        fprintf(stderr, "vhdx detach: %s detached\n", device);
    else
        fprintf(stderr, "vhdx detach: %s detached; its server had died, so the image was "
                "not closed (its log is replayed at the next open)\n", device);
    return 0;
}

/* Every running NBD device. */
static int detach_all(bool check_mounts)
{
    DIR *dir = opendir("/sys/block");
    struct dirent *e;
    int worst = 0;

    if (!dir)
        return EXIT_USAGE;
    while ((e = readdir(dir))) {
        unsigned index;
        int rc;

        if (sscanf(e->d_name, "nbd%u", &index) != 1 || !nbd_running(index, NULL))
            continue;
        rc = detach_one(index, check_mounts);
        worst = rc > worst ? rc : worst;
    }
    closedir(dir);
    return worst;
}

int cmd_detach(const struct options *o)
{
    char why[200];
    unsigned index;

    if (o->given & OPT_ALL) {
        if (o->image)
            return usage_error("%s", "detach --all takes no device");
        return detach_all(true);
    }
    if (!o->image)
        return usage_error("%s", "detach: which device? (/dev/nbdN, or --all)");
    if (!nbd_index(o->image, &index, why, sizeof why)) {
        fprintf(stderr, "vhdx detach: %s\n", why);
        return EXIT_USAGE;
    }
    return detach_one(index, true);
}

/* ------------------------------------------------------------------------------------ */
/* /run/initramfs/shutdown ACTION                                                        */

/* Not pivoted yet (an init without systemd's shutdown pivot): do it, as systemd does. */
static bool pivot_into_initramfs(void)
{
    static const char *const keep[] = { "dev", "proc", "sys" };
    char path[64];

    if (mount("/run/initramfs", "/run/initramfs", NULL, MS_BIND, NULL))
        return false;
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
        snprintf(path, sizeof path, "/run/initramfs/%s", keep[i]);
        make_directory(path, 0755);
        snprintf(path + 32, 32, "/%s", keep[i]);
        mount(path + 32, path, NULL, MS_BIND | MS_REC, NULL);
    }
    make_directory("/run/initramfs/oldroot", 0755);
    return !chdir("/run/initramfs") && !syscall(SYS_pivot_root, ".", "oldroot") &&
           !chroot(".") && !chdir("/");
}

/* Unmount everything under /oldroot, deepest first; what stays busy is detached. */
static void unmount_old_root(void)
{
    char points[256][512];
    unsigned count = 0;
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[4096];

    while (f && count < 256 && fgets(line, sizeof line, f)) {
        char point[512];

        if (sscanf(line, "%*u %*u %*u:%*u %*s %511s", point) == 1 &&
            !strncmp(point, "/oldroot", 8) && (point[8] == 0 || point[8] == '/'))
            snprintf(points[count++], sizeof points[0], "%s", point);
    }
    if (f)
        fclose(f);
    /* Children first: a child's mount point is longer than its parent's. */
    for (unsigned i = 1; i < count; i++) {
        for (unsigned j = i; j > 0 && strlen(points[j]) > strlen(points[j - 1]); j--) {
            char swap[512];

            memcpy(swap, points[j], sizeof swap);
            memcpy(points[j], points[j - 1], sizeof swap);
            memcpy(points[j - 1], swap, sizeof swap);
        }
    }
    for (unsigned i = 0; i < count; i++) {
        if (umount2(points[i], 0) && umount2(points[i], MNT_DETACH))
            fprintf(stderr, "vhdx shutdown: cannot unmount %s: %s\n", points[i],
                    strerror(errno));
    }
}

int shutdown_main(int argc, char **argv)
{
    const char *action = argc > 1 ? argv[1] : "poweroff";
    int how = !strcmp(action, "reboot") || !strcmp(action, "kexec") ? RB_AUTOBOOT
              : !strcmp(action, "halt") ? RB_HALT_SYSTEM : RB_POWER_OFF;

    messages_to_kmsg();
    if (!exists("/oldroot") && !pivot_into_initramfs())
        fprintf(stderr, "vhdx shutdown: cannot pivot into /run/initramfs: %s\n",
                strerror(errno));
    sync();
    unmount_old_root();
    sync();
    detach_all(false);
    sync();
    fprintf(stderr, "vhdx shutdown: %s\n", action);
    reboot(how);
    for (;;)
        pause();
}

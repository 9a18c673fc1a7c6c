/*
 * posix.c - the VHDX platform contract on a POSIX file: pread/pwrite, fdatasync,
 * ftruncate (which zero-fills, so grow() advertises VHDX_PLATFORM_GROW_ZEROES).
 * Large writes start their writeback at once (Linux sync_file_range), so the flush that
 * must follow them before the BAT may point at them waits for less.
 *
 * The optional zero and discard operations use fallocate(2): discard punches a hole, so
 * a block the core has freed (TRIM, a zeroed whole block) gives its space back to the
 * host file system; zero prefers FALLOC_FL_ZERO_RANGE, which keeps the range allocated
 * (a block that stays in use must not need new host space for its next write), and
 * writes zeros where the file system has neither.
 *
 * One writer per image: the open takes an open-file-description lock on the whole file
 * (exclusive when writable, shared when read-only), so a second writer, or a writer and
 * a reader, never have the same image open at once: the core keeps the BAT and the log
 * state in memory, and a reader's view of a file another process writes is not merely
 * stale but can be wrong.  OFD locks (not flock) because QEMU takes OFD byte-range locks
 * on its images: a `qemu-img` or `qemu-io` on an image we hold is refused by QEMU, and
 * one QEMU holds is refused here.
 *
 * Differencing parents (open_sibling): a locator's path is relative to the child's
 * directory, or (starting with '\') from the root of the child's volume, which here is
 * the mount point of the file system holding the child.  Windows names are not case
 * sensitive, so a component that does not exist as written is looked up ignoring case.
 *
 * POSIX_DIRECT (for `vhdx attach`, which may serve the root file system): I/O bypasses
 * the page cache (O_DIRECT), so serving a request never needs page-cache memory or its
 * writeback.  Requests whose offset, length or buffer are not DIRECT_ALIGN-aligned go
 * through a second, buffered descriptor of the same file (Linux keeps the two coherent:
 * a direct read writes back cached pages of its range first, a direct write drops them);
 * the core's own buffers are allocated aligned, so those are rare.  A file system
 * without O_DIRECT is used buffered.  Differencing parents are opened the same way as
 * their child.
 */
#include "posix.h"

#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIRECT_ALIGN 4096u

/* The descriptor for a request: the direct one when it is aligned. */
static int fd_for(const struct posix_file *file, uint64_t offset, const void *buffer,
                  size_t length)
{
    if (file->direct_fd >= 0 &&
        !((offset | length | (uintptr_t)buffer) & (DIRECT_ALIGN - 1)))
        return file->direct_fd;
    return file->fd;
}

static int posix_read(void *context, uint64_t offset, void *buffer, size_t length)
{
    struct posix_file *file = context;
    uint8_t *p = buffer;
    int fd = fd_for(file, offset, buffer, length);

    file->reads++;
    while (length) {
        ssize_t n = pread(fd, p, length, (off_t)offset);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return VHDX_E_IO;       /* error, or end of file inside the range */
        p += n;
        offset += (uint64_t)n;
        length -= (size_t)n;
        file->bytes_read += (uint64_t)n;
    }
    return VHDX_OK;
}

#define WRITE_BEHIND_MIN (1u << 20)

static int posix_write(void *context, uint64_t offset, const void *buffer, size_t length)
{
    struct posix_file *file = context;
    const uint8_t *p = buffer;
    uint64_t start = offset;
    size_t written = length;
    int fd = fd_for(file, offset, buffer, length);

    file->writes++;
    while (length) {
        ssize_t n = pwrite(fd, p, length, (off_t)offset);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return errno == ENOSPC ? VHDX_E_NO_SPACE : VHDX_E_IO;
        p += n;
        offset += (uint64_t)n;
        length -= (size_t)n;
        file->bytes_written += (uint64_t)n;
    }
    /* Large writes: start writeback now, so the next flush has less left to wait for. */
    if (written >= WRITE_BEHIND_MIN && fd == file->fd)
        sync_file_range(file->fd, (off_t)start, (off_t)written, SYNC_FILE_RANGE_WRITE);
    return VHDX_OK;
}

static int posix_flush(void *context)
{
    struct posix_file *file = context;

    file->flushes++;
    return fdatasync(file->fd) == 0 ? VHDX_OK : VHDX_E_IO;
}

static int posix_size(void *context, uint64_t *size)
{
    struct posix_file *file = context;
    struct stat st;

    if (fstat(file->fd, &st) != 0)
        return VHDX_E_IO;
    *size = (uint64_t)st.st_size;
    return VHDX_OK;
}

static int posix_grow(void *context, uint64_t new_size)
{
    struct posix_file *file = context;

    if (ftruncate(file->fd, (off_t)new_size) != 0)
        return errno == ENOSPC || errno == EFBIG ? VHDX_E_NO_SPACE : VHDX_E_IO;
    return VHDX_OK;
}

/* A file system without the fallocate mode (or without fallocate at all). */
static bool not_supported(int err)
{
    return err == EOPNOTSUPP || err == ENOSYS || err == EINVAL;
}

static int posix_zero(void *context, uint64_t offset, uint64_t length)
{
    struct posix_file *file = context;
    static const uint8_t zeros[64 * 1024];

    file->zeroes++;
    if (fallocate(file->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
                  (off_t)length) == 0)
        return VHDX_OK;
    if (!not_supported(errno))
        return errno == ENOSPC ? VHDX_E_NO_SPACE : VHDX_E_IO;
    while (length) {
        size_t piece = length < sizeof zeros ? (size_t)length : sizeof zeros;
        int rc = posix_write(context, offset, zeros, piece);

        if (rc)
            return rc;
        offset += piece;
        length -= piece;
    }
    return VHDX_OK;
}

/* The storage is no longer needed: give it back, or keep it where holes are unknown. */
static int posix_discard(void *context, uint64_t offset, uint64_t length)
{
    struct posix_file *file = context;

    file->discards++;
    if (fallocate(file->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
                  (off_t)length) == 0 || not_supported(errno))
        return VHDX_OK;
    return VHDX_E_IO;
}

/* Each block carries its size in front, so release can keep the count (vhdx -v shows the
 * high-water mark: memory bounds are asserted on it), and where the allocation starts.
 * With direct I/O the core's large buffers (cache pages, log pages) start DIRECT_ALIGN-
 * aligned, the header sitting in the aligned unit before them, so their requests need not
 * go through the buffered descriptor. */
union block_header {
    struct {
        size_t size;
        void *start;
    } h;
    max_align_t align;
};

static void *posix_allocate(void *context, size_t size)
{
    struct posix_file *file = context;
    union block_header *b;
    unsigned char *start;

    if (file->alloc_peak_requested < file->alloc_current + size)
        file->alloc_peak_requested = file->alloc_current + size;
    if (size > SIZE_MAX - 2 * DIRECT_ALIGN)
        return NULL;
    if (file->direct_fd >= 0 && size >= DIRECT_ALIGN) {
        start = aligned_alloc(DIRECT_ALIGN, DIRECT_ALIGN + ((size + DIRECT_ALIGN - 1) &
                                                            ~(size_t)(DIRECT_ALIGN - 1)));
        b = start ? (union block_header *)(start + DIRECT_ALIGN) - 1 : NULL;
    } else {
        start = malloc(sizeof *b + size);
        b = (union block_header *)start;
    }
    if (!start)
        return NULL;
    b->h.size = size;
    b->h.start = start;
    file->alloc_current += size;
    file->alloc_live++;
    if (file->alloc_peak < file->alloc_current)
        file->alloc_peak = file->alloc_current;
    return b + 1;
}

static void posix_release(void *context, void *memory)
{
    struct posix_file *file = context;
    union block_header *b = (union block_header *)memory - 1;

    if (!memory)
        return;
    file->alloc_current -= b->h.size;
    file->alloc_live--;
    free(b->h.start);
}

static void posix_log(void *context, enum vhdx_log_level level, const char *message)
{
    struct posix_file *file = context;

    if ((level == VHDX_LOG_INFO && file->verbosity < 1) ||
        (level == VHDX_LOG_DEBUG && file->verbosity < 2))
        return;
    fprintf(stderr, "vhdx: %s: %s%s\n", file->name,
            level == VHDX_LOG_WARNING ? "warning: " : "", message);
}

static int posix_random(void *context, uint8_t bytes[16])
{
    (void)context;
    return getrandom(bytes, 16, 0) == 16 ? VHDX_OK : VHDX_E_IO;
}

/* 0, EBUSY when another open holds a conflicting lock.  A file system without locks
 * (ENOLCK, EINVAL, EOPNOTSUPP) is used unlocked: refusing it would refuse the image. */
static int posix_lock(int fd, bool writable)
{
    struct flock lock = {
        .l_type = writable ? F_WRLCK : F_RDLCK,
        .l_whence = SEEK_SET,
        .l_start = 0,
        .l_len = 0,             /* to the end of the file, however it grows */
    };

    if (fcntl(fd, F_OFD_SETLK, &lock) == 0)
        return 0;
    return errno == EAGAIN || errno == EACCES ? EBUSY : 0;
}

/* A sibling: the file, and the path its name points to. */
struct sibling {
    struct posix_file file;
    char path[PATH_MAX];
};

/* The mount point holding `path`'s directory: walk up while the device stays the same. */
static bool volume_root(const char *path, char *root, size_t size)
{
    struct stat here, up;
    char *slash;

    if (!realpath(path, root) || strlen(root) >= size)
        return false;
    if ((slash = strrchr(root, '/')))
        *(slash == root ? slash + 1 : slash) = '\0';
    if (stat(root, &here) != 0)
        return false;
    while (strcmp(root, "/") != 0) {
        char parent[PATH_MAX];

        snprintf(parent, sizeof parent, "%s", root);
        slash = strrchr(parent, '/');
        *(slash == parent ? slash + 1 : slash) = '\0';
        if (stat(parent, &up) != 0 || up.st_dev != here.st_dev)
            break;
        snprintf(root, size, "%s", parent);
    }
    return true;
}

/* Append component `name` to `out`; when it does not exist as written, the entry of the
 * directory that matches it ignoring case. */
static bool append_component(char *out, size_t size, const char *name, size_t length)
{
    size_t used = strlen(out);
    struct dirent *entry;
    struct stat st;
    DIR *dir;

    if (used + 1 + length >= size)
        return false;
    if (used && out[used - 1] != '/')
        out[used++] = '/';
    memcpy(out + used, name, length);
    out[used + length] = '\0';
    if (lstat(out, &st) == 0 || !strcmp(out + used, ".") || !strcmp(out + used, ".."))
        return true;
    /* Not there as written: the directory's entry with the same name in another case. */
    out[used] = '\0';
    dir = opendir(used ? out : ".");
    memcpy(out + used, name, length);
    if (!dir)
        return true;
    while ((entry = readdir(dir))) {
        if (strlen(entry->d_name) == length && !strncasecmp(entry->d_name, name, length)) {
            memcpy(out + used, entry->d_name, length);
            break;
        }
    }
    closedir(dir);
    out[used + length] = '\0';
    return true;
}

static void posix_close(void *context)
{
    struct sibling *sibling = context;

    posix_file_close(&sibling->file);
    free(sibling);
}

static int posix_open_sibling(void *context, const char *path, bool writable,
                              struct vhdx_platform *platform)
{
    struct posix_file *file = context;
    struct sibling *sibling = calloc(1, sizeof *sibling);
    const char *p = path;
    char *slash;
    int err;

    if (!sibling)
        return VHDX_E_NOMEM;
    if (*p == '\\') {
        if (file->volume_root)
            snprintf(sibling->path, sizeof sibling->path, "%s", file->volume_root);
        else if (!volume_root(file->name, sibling->path, sizeof sibling->path))
            goto not_found;
    } else {
        snprintf(sibling->path, sizeof sibling->path, "%s", file->name);
        slash = strrchr(sibling->path, '/');
        if (slash)
            *(slash == sibling->path ? slash + 1 : slash) = '\0';
        else
            sibling->path[0] = '\0';
    }
    while (*p) {
        size_t length = strcspn(p, "\\/");

        if (length && !append_component(sibling->path, sizeof sibling->path, p, length))
            goto not_found;
        p += length;
        p += *p != '\0';
    }
    err = posix_file_open_with(&sibling->file, sibling->path, writable,
                               file->direct_fd >= 0 ? POSIX_DIRECT : 0, platform);
    if (err)
        goto not_found;
    sibling->file.verbosity = file->verbosity;
    sibling->file.volume_root = file->volume_root;
    platform->context = sibling;    /* the file is the sibling's first member */
    platform->close = posix_close;
    return VHDX_OK;

not_found:
    free(sibling);
    return VHDX_E_PARENT_NOT_FOUND;
}

int posix_file_open(struct posix_file *file, const char *path, bool writable,
                    struct vhdx_platform *platform)
{
    return posix_file_open_with(file, path, writable, 0, platform);
}

int posix_file_open_with(struct posix_file *file, const char *path, bool writable,
                         unsigned flags, struct vhdx_platform *platform)
{
    int mode = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC, err;

    memset(file, 0, sizeof *file);
    file->name = path;
    file->direct_fd = -1;
    file->fd = open(path, mode);
    if (file->fd < 0)
        return errno;
    err = posix_lock(file->fd, writable);
    if (err) {
        close(file->fd);
        file->fd = -1;
        return err;
    }
    /* The lock belongs to the first descriptor; the direct one shares the file. */
    if (flags & POSIX_DIRECT)
        file->direct_fd = open(path, mode | O_DIRECT);
    file->writable = writable;
    memset(platform, 0, sizeof *platform);
    platform->context = file;
    platform->read = posix_read;
    platform->write = posix_write;
    platform->flush = posix_flush;
    platform->size = posix_size;
    platform->grow = posix_grow;
    platform->allocate = posix_allocate;
    platform->release = posix_release;
    platform->log = posix_log;
    platform->random = posix_random;
    platform->zero = posix_zero;
    platform->discard = posix_discard;
    platform->open_sibling = posix_open_sibling;
    platform->flags = VHDX_PLATFORM_GROW_ZEROES | (writable ? 0 : VHDX_PLATFORM_READ_ONLY);
    return 0;
}

void posix_file_close(struct posix_file *file)
{
    if (file->direct_fd >= 0)
        close(file->direct_fd);
    if (file->fd >= 0)
        close(file->fd);
    file->fd = file->direct_fd = -1;
}

/*
 * posix.c - the VHDX platform contract on a POSIX file: pread/pwrite, fdatasync,
 * ftruncate (which zero-fills, so grow() advertises VHDX_PLATFORM_GROW_ZEROES).
 * Large writes start their writeback at once (Linux sync_file_range), so the flush that
 * must follow them before the BAT may point at them waits for less.
 */
#include "posix.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

static int posix_read(void *context, uint64_t offset, void *buffer, size_t length)
{
    struct posix_file *file = context;
    uint8_t *p = buffer;

    file->reads++;
    while (length) {
        ssize_t n = pread(file->fd, p, length, (off_t)offset);

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

    file->writes++;
    while (length) {
        ssize_t n = pwrite(file->fd, p, length, (off_t)offset);

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
    if (written >= WRITE_BEHIND_MIN)
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

/* Each block carries its size in front, so release can keep the count (vhdx -v shows the
 * high-water mark: memory bounds are asserted on it). */
union block_header {
    size_t size;
    max_align_t align;
};

static void *posix_allocate(void *context, size_t size)
{
    struct posix_file *file = context;
    union block_header *b;

    if (file->alloc_peak_requested < file->alloc_current + size)
        file->alloc_peak_requested = file->alloc_current + size;
    if (size > SIZE_MAX - sizeof *b || !(b = malloc(sizeof *b + size)))
        return NULL;
    b->size = size;
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
    file->alloc_current -= b->size;
    file->alloc_live--;
    free(b);
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

int posix_file_open(struct posix_file *file, const char *path, bool writable,
                    struct vhdx_platform *platform)
{
    memset(file, 0, sizeof *file);
    file->name = path;
    file->fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (file->fd < 0)
        return errno;
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
    platform->flags = VHDX_PLATFORM_GROW_ZEROES | (writable ? 0 : VHDX_PLATFORM_READ_ONLY);
    return 0;
}

void posix_file_close(struct posix_file *file)
{
    if (file->fd >= 0)
        close(file->fd);
    file->fd = -1;
}

/*
 * file.c - the core's only door to the platform (see file.h).
 */
#include "file.h"

#include "disk.h"

#define ZERO_CHUNK (64u * KIB)
/* core_alloc keeps each block's size in front of it, for the accounting. */
#define ALLOC_HEADER 16u

int file_init(struct vhdx_disk *disk, const struct vhdx_platform *platform, bool writable)
{
    struct file *file = &disk->file;
    int rc;

    file->platform = *platform;
    file->io = &file->platform;
    file->writable = writable;
    rc = platform->size(platform->context, &file->real_size);
    if (rc)
        return fail(disk, (enum vhdx_error)rc, 0, 0, "getting the file size");
    file->size = file->real_size;
    return VHDX_OK;
}

void file_release(struct vhdx_disk *disk)
{
    core_free(disk, disk->file.zeros);
    disk->file.zeros = NULL;
}

void *core_alloc(struct vhdx_disk *disk, size_t size)
{
    struct file *file = &disk->file;
    uint8_t *p = NULL;

    if (size && size <= SIZE_MAX - ALLOC_HEADER)
        p = file->platform.allocate(file->platform.context, size + ALLOC_HEADER);
    if (!p) {
        fail(disk, VHDX_E_NOMEM, size, 0, NULL);
        return NULL;
    }
    put_le64(p, size);
    file->memory_in_use += size;
    file->memory_peak = max_u64(file->memory_peak, file->memory_in_use);
    mem_zero(p + ALLOC_HEADER, size);
    return p + ALLOC_HEADER;
}

void core_free(struct vhdx_disk *disk, void *p)
{
    struct file *file = &disk->file;
    uint8_t *block;

    if (!p)
        return;
    block = (uint8_t *)p - ALLOC_HEADER;
    file->memory_in_use -= get_le64(block);
    file->platform.release(file->platform.context, block);
}

/* The platform's own error (read-only media, no space, ...) is more precise than ours. */
static int platform_error(struct vhdx_disk *disk, int rc, uint64_t offset, const char *doing)
{
    if (rc == VHDX_E_IO)
        return fail(disk, VHDX_E_IO, offset, 0, doing);
    if (vhdx_error_class((enum vhdx_error)rc) == VHDX_CLASS_READ_ONLY)
        return fail(disk, VHDX_E_MEDIA_READ_ONLY, offset, 0, doing);
    return fail(disk, (enum vhdx_error)rc, offset, 0, doing);
}

int file_read(struct vhdx_disk *disk, uint64_t offset, void *buf, size_t len)
{
    const struct vhdx_platform *io = disk->file.io;
    int rc;

    if (!range_fits(offset, len, disk->file.size))
        return fail(disk, VHDX_E_TRUNCATED, disk->file.size, offset, NULL);
    if (!len)
        return VHDX_OK;
    rc = io->read(io->context, offset, buf, len);
    return rc ? platform_error(disk, rc, offset, "reading") : VHDX_OK;
}

int file_write(struct vhdx_disk *disk, uint64_t offset, const void *buf, size_t len)
{
    struct file *file = &disk->file;
    int rc;

    if (!file->writable)
        return fail(disk, VHDX_E_READ_ONLY, 0, 0, NULL);
    if (!range_fits(offset, len, file->real_size))
        return fail(disk, VHDX_E_IO, offset, 0, "writing past the end of the file");
    if (!len)
        return VHDX_OK;
    file->unflushed = true;
    rc = file->platform.write(file->platform.context, offset, buf, len);
    return rc ? platform_error(disk, rc, offset, "writing") : VHDX_OK;
}

int file_flush(struct vhdx_disk *disk)
{
    struct file *file = &disk->file;
    int rc = file->platform.flush(file->platform.context);

    if (rc)
        return platform_error(disk, rc, 0, "flushing");
    file->unflushed = false;
    return VHDX_OK;
}

int file_grow(struct vhdx_disk *disk, uint64_t new_size)
{
    struct file *file = &disk->file;
    int rc;

    if (new_size <= file->real_size)
        return VHDX_OK;
    if (!file->writable)
        return fail(disk, VHDX_E_READ_ONLY, 0, 0, NULL);
    rc = file->platform.grow(file->platform.context, new_size);
    if (rc && vhdx_error_class((enum vhdx_error)rc) == VHDX_CLASS_NO_SPACE)
        return fail(disk, VHDX_E_NO_SPACE, new_size, 0, NULL);
    if (rc && vhdx_error_class((enum vhdx_error)rc) == VHDX_CLASS_READ_ONLY)
        return fail(disk, VHDX_E_MEDIA_READ_ONLY, new_size, 0, "growing the file");
    if (rc)
        return fail(disk, VHDX_E_GROW_FAILED, new_size, 0, NULL);
    file->unflushed = true;
    file->real_size = new_size;
    file->size = max_u64(file->size, new_size);
    return VHDX_OK;
}

static int write_zeros(struct vhdx_disk *disk, uint64_t offset, uint64_t length)
{
    struct file *file = &disk->file;
    int rc;

    if (!file->zeros) {
        file->zeros = core_alloc(disk, ZERO_CHUNK);
        if (!file->zeros)
            return disk->report.diag.code;
    }
    while (length) {
        size_t piece = (size_t)min_u64(length, ZERO_CHUNK);

        rc = file_write(disk, offset, file->zeros, piece);
        if (rc)
            return rc;
        offset += piece;
        length -= piece;
    }
    return VHDX_OK;
}

int file_zero(struct vhdx_disk *disk, uint64_t offset, uint64_t length)
{
    struct file *file = &disk->file;
    uint64_t end, inside;
    int rc;

    if (add_overflows(offset, length, &end))
        return fail(disk, VHDX_E_IO, offset, 0, "zeroing past 2^64 bytes");
    if (!length)
        return VHDX_OK;
    /* Growing makes the part past the end; it reads as zeros only if grow says so. */
    inside = offset < file->real_size ? min_u64(end, file->real_size) - offset : 0;
    if (end > file->real_size) {
        uint64_t old_size = file->real_size;

        rc = file_grow(disk, end);
        if (rc)
            return rc;
        if (!(file->platform.flags & VHDX_PLATFORM_GROW_ZEROES)) {
            uint64_t from = max_u64(offset, old_size);

            rc = write_zeros(disk, from, end - from);
            if (rc)
                return rc;
        }
    }
    if (!inside)
        return VHDX_OK;
    if (file->platform.zero) {
        if (!file->writable)
            return fail(disk, VHDX_E_READ_ONLY, 0, 0, NULL);
        file->unflushed = true;
        rc = file->platform.zero(file->platform.context, offset, inside);
        return rc ? platform_error(disk, rc, offset, "zeroing") : VHDX_OK;
    }
    return write_zeros(disk, offset, inside);
}

int file_discard(struct vhdx_disk *disk, uint64_t offset, uint64_t length)
{
    struct file *file = &disk->file;
    int rc;

    if (!file->platform.discard || !length)
        return VHDX_OK;
    if (!file->writable)
        return fail(disk, VHDX_E_READ_ONLY, 0, 0, NULL);
    if (!range_fits(offset, length, file->real_size))
        return fail(disk, VHDX_E_IO, offset, 0, "discarding past the end of the file");
    file->unflushed = true;
    rc = file->platform.discard(file->platform.context, offset, length);
    return rc ? platform_error(disk, rc, offset, "discarding") : VHDX_OK;
}

/* A random (version 4) GUID for the header's write and log GUIDs. */
int file_random_guid(struct vhdx_disk *disk, struct vhdx_guid *guid)
{
    struct file *file = &disk->file;
    int rc;

    if (!file->platform.random)
        return fail(disk, VHDX_E_ARGUMENT, 0, 0, "the platform has no random source");
    rc = file->platform.random(file->platform.context, guid->bytes);
    if (rc)
        return platform_error(disk, rc, 0, "getting random bytes");
    /* Data3's high nibble (byte 7 on disk) is the version; Data4[0] the variant. */
    guid->bytes[7] = (uint8_t)((guid->bytes[7] & 0x0F) | 0x40);
    guid->bytes[8] = (uint8_t)((guid->bytes[8] & 0x3F) | 0x80);
    if (vhdx_guid_is_zero(guid))
        guid->bytes[0] = 1;
    return VHDX_OK;
}

void file_set_view(struct vhdx_disk *disk, const struct vhdx_platform *view, uint64_t size)
{
    disk->file.io = view;
    disk->file.size = max_u64(size, disk->file.real_size);
}

void file_clear_view(struct vhdx_disk *disk)
{
    disk->file.io = &disk->file.platform;
    disk->file.size = disk->file.real_size;
}

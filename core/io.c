/*
 * io.c - the core's only door to the platform: memory, file I/O, randomness.
 *
 * Reads pass through the replay overlay: after a read-only open of a dirty image the
 * log's updates live in memory (log.c) and every read of the file must see them, so
 * they are patched in here, below every parser and the read path.
 */
#include "vhdx_int.h"

void *core_alloc(struct vhdx_disk *disk, size_t size)
{
    void *p = size ? disk->platform.allocate(disk->platform.context, size) : NULL;

    if (!p) {
        fail(disk, VHDX_E_NOMEM, size, 0, NULL);
        return NULL;
    }
    mem_zero(p, size);
    return p;
}

void core_free(struct vhdx_disk *disk, void *p)
{
    if (p)
        disk->platform.release(disk->platform.context, p);
}

static int io_error(struct vhdx_disk *disk, int rc, uint64_t offset, const char *what)
{
    if (rc == VHDX_E_IO)
        return fail(disk, VHDX_E_IO, offset, 0, what);
    /* The platform's own reason (read-only media, no space, ...) is more precise. */
    return fail(disk, (enum vhdx_error)rc, offset, 0, what);
}

int file_read(struct vhdx_disk *disk, uint64_t offset, void *buf, size_t len)
{
    uint64_t end;
    size_t from_file = len;
    int rc;

    if (add_overflows(offset, len, &end) || end > disk->file_size)
        return fail(disk, VHDX_E_TRUNCATED, disk->file_size, offset, NULL);
    /* Replay may have grown the file in memory only: that part reads as zeros. */
    if (end > disk->real_file_size)
        from_file = offset >= disk->real_file_size ? 0 : (size_t)(disk->real_file_size - offset);
    if (from_file) {
        rc = disk->platform.read(disk->platform.context, offset, buf, from_file);
        if (rc)
            return io_error(disk, rc, offset, "reading");
    }
    if (from_file < len)
        mem_zero((uint8_t *)buf + from_file, len - from_file);
    if (disk->overlay_count && overlay_covers(disk, offset, len))
        overlay_apply(disk, offset, buf, len);
    return VHDX_OK;
}

int file_write(struct vhdx_disk *disk, uint64_t offset, const void *buf, size_t len)
{
    uint64_t end;
    int rc;

    if (!disk->writable)
        return fail(disk, VHDX_E_READ_ONLY, 0, 0, NULL);
    if (add_overflows(offset, len, &end) || end > disk->real_file_size)
        return fail(disk, VHDX_E_IO, offset, 0, "(write past the end of the file)");
    rc = disk->platform.write(disk->platform.context, offset, buf, len);
    if (rc)
        return io_error(disk, rc, offset, "writing");
    return VHDX_OK;
}

int file_flush(struct vhdx_disk *disk)
{
    int rc = disk->platform.flush(disk->platform.context);

    if (rc)
        return io_error(disk, rc, 0, "flushing");
    return VHDX_OK;
}

int file_grow(struct vhdx_disk *disk, uint64_t new_size)
{
    int rc;

    if (new_size <= disk->real_file_size)
        return VHDX_OK;
    rc = disk->platform.grow(disk->platform.context, new_size);
    if (rc == VHDX_E_NO_SPACE)
        return fail(disk, VHDX_E_NO_SPACE, new_size, 0, NULL);
    if (rc)
        return io_error(disk, rc, new_size, "growing the file to");
    disk->real_file_size = new_size;
    if (disk->file_size < new_size)
        disk->file_size = new_size;
    return VHDX_OK;
}

/* A random (version 4) GUID for the header's write and log GUIDs. */
int file_random_guid(struct vhdx_disk *disk, struct vhdx_guid *guid)
{
    int rc;

    if (!disk->platform.random)
        return fail(disk, VHDX_E_ARGUMENT, 0, 0, "the platform has no random source");
    rc = disk->platform.random(disk->platform.context, guid->bytes);
    if (rc)
        return io_error(disk, rc, 0, "getting random bytes");
    /* Data3's high nibble (byte 7 on disk) is the version; Data4[0] the variant. */
    guid->bytes[7] = (uint8_t)((guid->bytes[7] & 0x0F) | 0x40);
    guid->bytes[8] = (uint8_t)((guid->bytes[8] & 0x3F) | 0x80);
    if (vhdx_guid_is_zero(guid))
        guid->bytes[0] = 1;
    return VHDX_OK;
}

/*
 * blockio.c - stage 4 of a mount (mount.h): the EFI_BLOCK_IO_PROTOCOL instance of a
 * mounted disk, and its handle.
 *
 * Requests are checked in the order EDK II's own producers use (uefi-notes.md), then
 * served by the core with the TPL raised to TPL_CALLBACK, which serialises callers the
 * way the firmware's storage drivers do.  The core reaches the .vhdx file only through
 * the ESP partition's Block I/O and Disk I/O (platform/efi_esp.c), never through the
 * firmware FAT driver, which may be the caller here.  A RAM disk of our own (ramdisk.c)
 * is served from its memory instead.
 */
#include "console.h"
#include "mount.h"

/* Any value works; it changes never, since the medium cannot be swapped. */
#define DISK_MEDIA_ID 1
/* Enough to explain a failing disk without flooding the console. */
#define MAX_ERRORS_SHOWN 8

static EFI_GUID disk_vendor_guid = DISK_VENDOR_GUID;

static struct mounted_disk *disk_from(EFI_BLOCK_IO_PROTOCOL *block_io)
{
    return container_of(block_io, struct mounted_disk, block_io);
}

/* UEFI 2.10 section 13.9 argument checks, in the order listed in uefi-notes.md. */
static EFI_STATUS check_request(const struct mounted_disk *disk, UINT32 media_id,
                                EFI_LBA lba, UINTN size, const void *buffer, bool write)
{
    const EFI_BLOCK_IO_MEDIA *media = &disk->media;
    UINTN blocks;

    if (disk->stopped)
        return EFI_DEVICE_ERROR;
    if (media_id != media->MediaId)
        return EFI_MEDIA_CHANGED;
    if (write && media->ReadOnly)
        return EFI_WRITE_PROTECTED;
    if (!buffer)
        return EFI_INVALID_PARAMETER;
    if (size == 0)
        return EFI_SUCCESS;
    if (size % media->BlockSize)
        return EFI_BAD_BUFFER_SIZE;
    blocks = size / media->BlockSize;
    if (lba > media->LastBlock || blocks - 1 > media->LastBlock - lba)
        return EFI_INVALID_PARAMETER;
    if (media->IoAlign > 1 && (uintptr_t)buffer % media->IoAlign)
        return EFI_INVALID_PARAMETER;
    return EFI_SUCCESS;
}

static void show_error(struct mounted_disk *disk, const char *what, EFI_LBA lba)
{
    char reason[160];

    if (disk->errors_shown >= MAX_ERRORS_SHOWN)
        return;
    vhdx_describe(vhdx_last_diag(disk->vhdx), reason, sizeof reason);
    disk->errors_shown++;
    con_print("vhdx: %s: %s at LBA %llu failed: %s%s\n", disk->path, what,
              (unsigned long long)lba, reason,
              disk->errors_shown == MAX_ERRORS_SHOWN ? " (further errors not shown)" : "");
}

/* A write found no room for a new block: say once what actually happened. */
static void show_full(struct mounted_disk *disk)
{
    char room[24];

    if (disk->full_shown)
        return;
    disk->full_shown = true;
    con_size_text(room, sizeof room, disk->room);
    if (disk->reserve == 0 && !disk->expand && disk->room == 0)
        con_print("vhdx: %s: no room in the file for a new block: it had none at mount, and "
                  "reserve=0 keeps it from growing; writes that need a new block fail with "
                  "Volume Full (the file system inside may need a repair)\n", disk->path);
    else if (disk->reserve == 0 && !disk->expand)
        con_print("vhdx: %s: the %s of room for new blocks the file had at mount is used up, "
                  "and reserve=0 keeps it from growing; writes that need a new block fail "
                  "with Volume Full (the file system inside may need a repair)\n",
                  disk->path, room);
    else
        con_print("vhdx: %s: the %s of room for new blocks the file had at mount is used up; "
                  "writes that need a new block fail with Volume Full until the next mount "
                  "grows the file (the file system inside may need a repair)\n",
                  disk->path, room);
}

static EFI_STATUS EFIAPI blockio_reset(EFI_BLOCK_IO_PROTOCOL *this, BOOLEAN extended)
{
    (void)this;
    (void)extended;
    return EFI_SUCCESS;
}

static EFI_STATUS EFIAPI blockio_read(EFI_BLOCK_IO_PROTOCOL *this, UINT32 media_id,
                                      EFI_LBA lba, UINTN size, VOID *buffer)
{
    struct mounted_disk *disk = disk_from(this);
    EFI_STATUS status;
    EFI_TPL tpl;
    int rc;

    status = check_request(disk, media_id, lba, size, buffer, false);
    if (status != EFI_SUCCESS || size == 0)
        return status;
    if (disk->ram_disk.base) {
        efi_bs->CopyMem(buffer, (void *)(uintptr_t)(disk->ram_disk.base +
                                                   lba * disk->media.BlockSize), size);
        return EFI_SUCCESS;
    }
    tpl = efi_bs->RaiseTPL(TPL_CALLBACK);
    rc = vhdx_read(disk->vhdx, lba, size / disk->media.BlockSize, buffer);
    if (rc)
        show_error(disk, "reading", lba);
    efi_bs->RestoreTPL(tpl);
    return rc ? EFI_DEVICE_ERROR : EFI_SUCCESS;
}

static EFI_STATUS EFIAPI blockio_write(EFI_BLOCK_IO_PROTOCOL *this, UINT32 media_id,
                                       EFI_LBA lba, UINTN size, VOID *buffer)
{
    struct mounted_disk *disk = disk_from(this);
    EFI_STATUS status;
    EFI_TPL tpl;
    int rc;

    status = check_request(disk, media_id, lba, size, buffer, true);
    if (status != EFI_SUCCESS || size == 0)
        return status;
    if (disk->ram_disk.base) {
        efi_bs->CopyMem((void *)(uintptr_t)(disk->ram_disk.base + lba * disk->media.BlockSize),
                        buffer, size);
        return EFI_SUCCESS;
    }
    tpl = efi_bs->RaiseTPL(TPL_CALLBACK);
    rc = vhdx_write(disk->vhdx, lba, size / disk->media.BlockSize, buffer);
    if (rc == VHDX_E_NO_SPACE) {
        status = EFI_VOLUME_FULL;
        show_full(disk);
    } else if (rc == VHDX_E_READ_ONLY) {
        status = EFI_WRITE_PROTECTED;
    } else if (rc) {
        status = EFI_DEVICE_ERROR;
        show_error(disk, "writing", lba);
    }
    /*
     * A new block lives in the in-memory BAT until a flush, and firmware file systems
     * never call FlushBlocks: commit the allocation now, so that a write acknowledged
     * here survives a crash or a power cut, not only an orderly reset.  Writes to
     * blocks already present need no flush (their data went to the file directly).
     */
    if (vhdx_allocation_pending(disk->vhdx) && vhdx_flush(disk->vhdx) != VHDX_OK) {
        show_error(disk, "committing a new block", lba);
        if (status == EFI_SUCCESS)
            status = EFI_DEVICE_ERROR;
    }
    efi_bs->RestoreTPL(tpl);
    return status;
}

static EFI_STATUS EFIAPI blockio_flush(EFI_BLOCK_IO_PROTOCOL *this)
{
    struct mounted_disk *disk = disk_from(this);
    EFI_TPL tpl;
    int rc;

    if (disk->stopped)
        return EFI_DEVICE_ERROR;
    if (!disk->writable || disk->ram_disk.base)
        return EFI_SUCCESS;
    tpl = efi_bs->RaiseTPL(TPL_CALLBACK);
    rc = vhdx_flush(disk->vhdx);
    if (rc)
        show_error(disk, "flushing", 0);
    efi_bs->RestoreTPL(tpl);
    return rc ? EFI_DEVICE_ERROR : EFI_SUCCESS;
}

EFI_DEVICE_PATH *disk_device_path(const EFI_DEVICE_PATH *esp_path, const char *path)
{
    size_t parent = efi_device_path_size(esp_path) - END_DEVICE_PATH_LENGTH;
    size_t chars = 1, node_length;
    const char *p;
    EFI_DEVICE_PATH *result, *end;
    VENDOR_DEVICE_PATH *vendor;
    CHAR16 *data;

    for (p = path; *p; chars++) {
        CHAR16 c;

        p = utf8_next(p, &c);
    }
    node_length = sizeof *vendor + chars * sizeof(CHAR16);
    if (node_length > 0xFFFF)
        return NULL;
    result = efi_allocate(parent + node_length + END_DEVICE_PATH_LENGTH);
    if (!result)
        return NULL;
    efi_bs->CopyMem(result, (void *)esp_path, parent);
    vendor = (VENDOR_DEVICE_PATH *)((uint8_t *)result + parent);
    vendor->Header.Type = MEDIA_DEVICE_PATH;
    vendor->Header.SubType = MEDIA_VENDOR_DP;
    vendor->Header.Length[0] = (UINT8)node_length;
    vendor->Header.Length[1] = (UINT8)(node_length >> 8);
    vendor->Guid = disk_vendor_guid;
    /* Unaligned UCS-2 in a packed node: store byte by byte. */
    data = (CHAR16 *)(vendor + 1);
    for (p = path, chars = 0; *p; chars++) {
        CHAR16 c;

        p = utf8_next(p, &c);
        if (c >= 'a' && c <= 'z')
            c = (CHAR16)(c - 'a' + 'A');
        ((uint8_t *)data)[2 * chars] = (uint8_t)c;
        ((uint8_t *)data)[2 * chars + 1] = (uint8_t)(c >> 8);
    }
    ((uint8_t *)data)[2 * chars] = 0;
    ((uint8_t *)data)[2 * chars + 1] = 0;
    end = (EFI_DEVICE_PATH *)((uint8_t *)vendor + node_length);
    end->Type = END_DEVICE_PATH_TYPE;
    end->SubType = END_ENTIRE_DEVICE_PATH_SUBTYPE;
    end->Length[0] = END_DEVICE_PATH_LENGTH;
    end->Length[1] = 0;
    return result;
}

bool disk_device_path_taken(EFI_DEVICE_PATH *device_path)
{
    EFI_DEVICE_PATH *remaining = device_path;
    EFI_HANDLE handle;

    if (efi_bs->LocateDevicePath(&efi_device_path_guid, &remaining, &handle) != EFI_SUCCESS)
        return false;
    return remaining->Type == END_DEVICE_PATH_TYPE &&
           remaining->SubType == END_ENTIRE_DEVICE_PATH_SUBTYPE;
}

/*
 * Record the mounted disk as a child of the ESP partition: the firmware then refuses
 * to uninstall the partition's Block I/O and Disk I/O while we depend on them.
 */
static EFI_STATUS open_esp(struct mounted_disk *disk, const struct efi_esp *esp)
{
    void *interface;
    EFI_STATUS status;

    status = efi_bs->OpenProtocol(esp->handle, &efi_block_io_guid, &interface,
                                  efi_image_handle, disk->handle,
                                  EFI_OPEN_PROTOCOL_BY_CHILD_CONTROLLER);
    if (status != EFI_SUCCESS)
        goto err_block_io;
    status = efi_bs->OpenProtocol(esp->handle, &efi_disk_io_guid, &interface,
                                  efi_image_handle, disk->handle,
                                  EFI_OPEN_PROTOCOL_BY_CHILD_CONTROLLER);
    if (status != EFI_SUCCESS)
        goto err_disk_io;
    disk->esp_opened = true;
    return EFI_SUCCESS;

err_disk_io:
    efi_bs->CloseProtocol(esp->handle, &efi_block_io_guid, efi_image_handle, disk->handle);
err_block_io:
    return status;
}

static void close_esp(struct mounted_disk *disk, const struct efi_esp *esp)
{
    if (!disk->esp_opened)
        return;
    efi_bs->CloseProtocol(esp->handle, &efi_disk_io_guid, efi_image_handle, disk->handle);
    efi_bs->CloseProtocol(esp->handle, &efi_block_io_guid, efi_image_handle, disk->handle);
    disk->esp_opened = false;
}

EFI_STATUS blockio_install(struct mounted_disk *disk, const struct efi_esp *esp)
{
    EFI_BLOCK_IO_MEDIA *media = &disk->media;
    const struct vhdx_info *info = &disk->info;
    EFI_STATUS status;

    efi_bs->SetMem(media, sizeof *media, 0);
    media->MediaId = DISK_MEDIA_ID;
    media->RemovableMedia = FALSE;
    media->MediaPresent = TRUE;
    media->LogicalPartition = FALSE;
    /* A RAM disk takes writes: they stay in memory. */
    media->ReadOnly = !disk->writable && !disk->ram_disk.base;
    media->WriteCaching = FALSE;
    media->BlockSize = info->logical_sector_size;
    /* Buffers go to the ESP's device as they are (zero copy), so pass its needs on. */
    media->IoAlign = esp->io_align > 1 && !disk->ram_disk.base ? esp->io_align : 0;
    media->LastBlock = info->virtual_size / info->logical_sector_size - 1;
    media->LowestAlignedLba = 0;
    media->LogicalBlocksPerPhysicalBlock =
        info->physical_sector_size > info->logical_sector_size ?
        info->physical_sector_size / info->logical_sector_size : 1;
    /* A VHDX block is the unit the file is allocated in. */
    media->OptimalTransferLengthGranularity = info->block_size / info->logical_sector_size;

    disk->block_io.Revision = EFI_BLOCK_IO_PROTOCOL_REVISION3;
    disk->block_io.Media = media;
    disk->block_io.Reset = blockio_reset;
    disk->block_io.ReadBlocks = blockio_read;
    disk->block_io.WriteBlocks = blockio_write;
    disk->block_io.FlushBlocks = blockio_flush;

    registry_tag(disk, esp);
    disk->handle = NULL;
    status = efi_bs->InstallMultipleProtocolInterfaces(&disk->handle,
                                                       &efi_block_io_guid, &disk->block_io,
                                                       &efi_device_path_guid,
                                                       disk->device_path, &disk_tag_guid,
                                                       &disk->tag, NULL);
    if (status != EFI_SUCCESS)
        goto err_install;
    /* A RAM disk needs the ESP no more. */
    status = disk->ram_disk.base ? EFI_SUCCESS : open_esp(disk, esp);
    if (status != EFI_SUCCESS)
        goto err_open_esp;
    /* Let the partition and FAT drivers bind now, not only at the next connect. */
    efi_bs->ConnectController(disk->handle, NULL, NULL, TRUE);
    return EFI_SUCCESS;

err_open_esp:
    efi_bs->UninstallMultipleProtocolInterfaces(disk->handle, &efi_block_io_guid,
                                                &disk->block_io, &efi_device_path_guid,
                                                disk->device_path, &disk_tag_guid,
                                                &disk->tag, NULL);
err_install:
    disk->handle = NULL;
    return status;
}

EFI_STATUS blockio_uninstall(struct mounted_disk *disk, const struct efi_esp *esp)
{
    EFI_STATUS status;

    if (!disk->handle)
        return EFI_SUCCESS;
    status = efi_bs->DisconnectController(disk->handle, NULL, NULL);
    if (status != EFI_SUCCESS)
        goto err_disconnect;
    close_esp(disk, esp);
    status = efi_bs->UninstallMultipleProtocolInterfaces(disk->handle, &efi_block_io_guid,
                                                         &disk->block_io,
                                                         &efi_device_path_guid,
                                                         disk->device_path, &disk_tag_guid,
                                                         &disk->tag, NULL);
    if (status != EFI_SUCCESS)
        goto err_uninstall;
    disk->handle = NULL;
    return EFI_SUCCESS;

err_uninstall:
    open_esp(disk, esp);
err_disconnect:
    /* Put back whatever was disconnected before the failure. */
    efi_bs->ConnectController(disk->handle, NULL, NULL, TRUE);
    return status;
}

/*
 * efi_esp.c - the VHDX platform contract over a file on the EFI System Partition,
 * served through the partition's Block I/O and Disk I/O (see efi_esp.h for why), and
 * the few changes to files made through the firmware's FAT driver at mount time.
 */
#include "efi_esp.h"

#include "config.h"
#include "console.h"
#include "system.h"

/* --- the partition ----------------------------------------------------------------- */

EFI_STATUS efi_esp_init(struct efi_esp *esp, EFI_HANDLE handle)
{
    EFI_STATUS status;

    esp->handle = handle;
    status = efi_bs->HandleProtocol(handle, &efi_block_io_guid, (void **)&esp->block_io);
    if (status != EFI_SUCCESS)
        return status;
    status = efi_bs->HandleProtocol(handle, &efi_disk_io_guid, (void **)&esp->disk_io);
    if (status != EFI_SUCCESS)
        return status;
    status = efi_bs->HandleProtocol(handle, &efi_device_path_guid,
                                    (void **)&esp->device_path);
    if (status != EFI_SUCCESS)
        return status;
    esp->media_id = esp->block_io->Media->MediaId;
    esp->block_size = esp->block_io->Media->BlockSize;
    esp->io_align = esp->block_io->Media->IoAlign ? esp->block_io->Media->IoAlign : 1;
    esp->size = (esp->block_io->Media->LastBlock + 1) * (uint64_t)esp->block_size;
    esp->read_only = esp->block_io->Media->ReadOnly;
    if (esp->block_size == 0 || (esp->block_size & (esp->block_size - 1)))
        return EFI_UNSUPPORTED;
    /* Optional: needed only to read configuration files and to change files. */
    if (efi_bs->HandleProtocol(handle, &efi_simple_file_system_guid,
                               (void **)&esp->file_system) != EFI_SUCCESS)
        esp->file_system = NULL;
    return EFI_SUCCESS;
}

/*
 * One transfer at a partition byte offset.  Whole blocks into a buffer the device can
 * use go straight to Block I/O; Disk I/O takes everything else (it bounces the edges).
 */
static EFI_STATUS esp_transfer(const struct efi_esp *esp, bool write, uint64_t offset,
                               void *buffer, size_t length)
{
    EFI_BLOCK_IO_PROTOCOL *block_io = esp->block_io;
    UINT32 media_id = esp->media_id;    /* never another medium's blocks */

    if (offset % esp->block_size == 0 && length % esp->block_size == 0 &&
        (uintptr_t)buffer % esp->io_align == 0) {
        EFI_LBA lba = offset / esp->block_size;

        return write ? block_io->WriteBlocks(block_io, media_id, lba, length, buffer)
                     : block_io->ReadBlocks(block_io, media_id, lba, length, buffer);
    }
    return write ? esp->disk_io->WriteDisk(esp->disk_io, media_id, offset, length, buffer)
                 : esp->disk_io->ReadDisk(esp->disk_io, media_id, offset, length, buffer);
}

/* fat.c's reader: partition bytes, through Disk I/O (its buffers have any alignment). */
static int fat_reader(void *context, uint64_t offset, void *buffer, uint32_t length)
{
    const struct efi_esp *esp = context;

    if (offset > esp->size || length > esp->size - offset)
        return 1;
    return esp->disk_io->ReadDisk(esp->disk_io, esp->media_id, offset, length,
                                  buffer) == EFI_SUCCESS ? 0 : 1;
}

/* --- mapping ----------------------------------------------------------------------- */

/* Mount the FAT of the ESP into `volume` (pool memory, ~8 KiB) and look `path` up. */
static enum fat_error lookup(struct fat_volume **volume, const struct efi_esp *esp,
                             const char *path, struct fat_file *found, const char **detail)
{
    enum fat_error err;

    *detail = NULL;
    *volume = efi_allocate(sizeof **volume);
    if (!*volume)
        return FAT_E_IO;
    err = fat_mount(*volume, fat_reader, (void *)esp, esp->size);
    if (err) {
        *detail = (*volume)->detail;
        goto err_mount;
    }
    err = fat_lookup(*volume, path, found);
    if (err)
        goto err_lookup;
    return FAT_OK;

err_lookup:
err_mount:
    efi_free(*volume);
    *volume = NULL;
    return err;
}

enum fat_error efi_esp_lookup(const struct efi_esp *esp, const char *path,
                              struct fat_file *found, const char **detail)
{
    struct fat_volume *volume;
    enum fat_error err = lookup(&volume, esp, path, found, detail);

    efi_free(volume);
    return err;
}

/* The extents and identity of `path` into `file` (its other fields are left alone). */
static enum fat_error map_extents(struct efi_esp_file *file, const char *path,
                                  const char **detail)
{
    struct fat_volume *volume;
    struct fat_file found;
    struct fat_extent *extents;
    uint32_t count = 0, extent_count;
    enum fat_error err;

    /* ~8 KiB of caches: pool memory, only while mapping. */
    err = lookup(&volume, file->esp, path, &found, detail);
    if (err)
        return err;
    if (found.is_directory) {
        err = FAT_E_NOT_A_FILE;
        goto err_directory;
    }
    err = fat_map(volume, &found, NULL, 0, &count);
    if (err)
        goto err_count;
    extents = efi_allocate((count ? count : 1) * sizeof *extents);
    if (!extents) {
        err = FAT_E_IO;
        goto err_alloc;
    }
    err = fat_map(volume, &found, extents, count, &extent_count);
    if (err)
        goto err_map;
    efi_free(file->extents);
    file->extents = extents;
    file->extent_count = extent_count;
    file->size = found.size;
    file->entry_offset = found.entry_offset;
    file->first_cluster = found.first_cluster;
    file->attributes = found.attributes;
    efi_free(volume);
    return FAT_OK;

err_map:
    efi_free(extents);
err_alloc:
err_count:
err_directory:
    efi_free(volume);
    return err;
}

enum fat_error efi_esp_map(struct efi_esp_file *file, const struct efi_esp *esp,
                           const char *path, const char **detail)
{
    enum fat_error err;

    efi_bs->SetMem(file, sizeof *file, 0);
    file->esp = esp;
    err = map_extents(file, path, detail);
    if (err)
        return err;
    /* Without it only the last flush at ExitBootServices is lost: not a failure here. */
    file->exit_memory = efi_allocate(EFI_ESP_EXIT_MEMORY);
    return FAT_OK;
}

EFI_STATUS efi_esp_probe_write(const struct efi_esp_file *file)
{
    uint8_t sector[512];
    size_t length = file->size < sizeof sector ? (size_t)file->size : sizeof sector;
    EFI_STATUS status;

    if (file->extent_count == 0 || length == 0)
        return EFI_SUCCESS;
    status = esp_transfer(file->esp, false, file->extents[0].volume_offset, sector, length);
    if (status != EFI_SUCCESS)
        return status;
    return esp_transfer(file->esp, true, file->extents[0].volume_offset, sector, length);
}

/* After ExitBootServices has begun, memory may be neither allocated nor freed. */
static bool services_gone(const struct efi_esp_file *file)
{
    return file->child ? file->child->boot_services_gone : file->boot_services_gone;
}

void efi_esp_unmap(struct efi_esp_file *file)
{
    if (!services_gone(file)) {
        efi_free(file->exit_memory);
        efi_free(file->extents);
    }
    file->exit_memory = NULL;
    file->extents = NULL;
    file->extent_count = 0;
    file->size = 0;
}

/* --- the platform contract --------------------------------------------------------- */

/* Transfer file bytes, one partition request per extent crossed. */
static int file_transfer(struct efi_esp_file *file, bool write, uint64_t offset,
                         uint8_t *buffer, size_t length)
{
    while (length) {
        uint64_t volume_offset, contiguous;
        size_t piece;
        EFI_STATUS status;

        if (!fat_extent_lookup(file->extents, file->extent_count, offset, &volume_offset,
                               &contiguous))
            return VHDX_E_IO;       /* past the end of the file */
        piece = contiguous < length ? (size_t)contiguous : length;
        status = esp_transfer(file->esp, write, volume_offset, buffer, piece);
        if (status == EFI_WRITE_PROTECTED)
            return VHDX_E_READ_ONLY;
        if (status != EFI_SUCCESS)
            return VHDX_E_IO;
        offset += piece;
        buffer += piece;
        length -= piece;
    }
    return VHDX_OK;
}

static int esp_read(void *context, uint64_t offset, void *buffer, size_t length)
{
    struct efi_esp_file *file = context;

    if (offset > file->size || length > file->size - offset)
        return VHDX_E_IO;
    return file_transfer(file, false, offset, buffer, length);
}

static int esp_write(void *context, uint64_t offset, const void *buffer, size_t length)
{
    struct efi_esp_file *file = context;

    if (file->read_only)
        return VHDX_E_READ_ONLY;
    if (offset > file->size || length > file->size - offset)
        return VHDX_E_IO;
    return file_transfer(file, true, offset, (uint8_t *)buffer, length);
}

static int esp_flush(void *context)
{
    struct efi_esp_file *file = context;
    EFI_BLOCK_IO_PROTOCOL *block_io = file->esp->block_io;

    return block_io->FlushBlocks(block_io) == EFI_SUCCESS ? VHDX_OK : VHDX_E_IO;
}

static int esp_size(void *context, uint64_t *size)
{
    struct efi_esp_file *file = context;

    *size = file->size;
    return VHDX_OK;
}

/*
 * While the file is growable (at mount, before the disk is served), extend it through
 * the firmware's FAT driver and map it again; afterwards new blocks come from the room
 * made then, since the file cannot grow while the FAT driver may be our caller.
 */
static int esp_grow(void *context, uint64_t new_size)
{
    struct efi_esp_file *file = context;
    struct efi_esp_change change = { .resize = true, .size = new_size };
    const char *detail;
    EFI_STATUS status;

    if (new_size <= file->size)
        return VHDX_OK;
    if (!file->growable || file->read_only)
        return VHDX_E_NO_SPACE;
    status = efi_esp_change_file(file->esp, file->name, &change);
    /* Even a failed extension may have changed the file: map it again either way. */
    if (map_extents(file, file->name, &detail) != FAT_OK)
        return VHDX_E_IO;
    if (status == EFI_VOLUME_FULL)
        return VHDX_E_NO_SPACE;
    if (status == EFI_WRITE_PROTECTED || status == EFI_ACCESS_DENIED)
        return VHDX_E_MEDIA_READ_ONLY;
    if (status != EFI_SUCCESS || file->size < new_size)
        return VHDX_E_IO;
    return VHDX_OK;
}

static void *esp_allocate(void *context, size_t size)
{
    struct efi_esp_file *file = context;
    size_t start = (file->exit_memory_used + 15) & ~(size_t)15;

    if (!services_gone(file))
        return efi_allocate(size);
    if (!file->exit_memory || start > EFI_ESP_EXIT_MEMORY ||
        size > EFI_ESP_EXIT_MEMORY - start)
        return NULL;
    file->exit_memory_used = start + size;
    return file->exit_memory + start;
}

static void esp_release(void *context, void *memory)
{
    struct efi_esp_file *file = context;

    if (!services_gone(file))
        efi_free(memory);
}

static void esp_log(void *context, enum vhdx_log_level level, const char *message)
{
    struct efi_esp_file *file = context;

    if (services_gone(file) || level == VHDX_LOG_DEBUG ||
        (level == VHDX_LOG_INFO && !file->verbose))
        return;
    con_print("vhdx: %s: %s%s\n", file->name,
              level == VHDX_LOG_WARNING ? "warning: " : "", message);
}

/* A 64-bit mixer (an avalanche of xor-shifts and odd multipliers). */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    x ^= x >> 33;
    return x;
}

/*
 * 16 random bytes for new GUIDs: EFI_RNG_PROTOCOL when the firmware has one, else a
 * mix of the wall clock, the time-stamp counter and a counter, which is enough for
 * GUIDs that must differ between sessions, not for secrets.
 */
static int esp_random(void *context, uint8_t bytes[16])
{
    struct efi_esp_file *file = context;
    EFI_RNG_PROTOCOL *rng;
    EFI_TIME now = { 0 };
    uint64_t words[2];

    if (!services_gone(file) &&
        efi_bs->LocateProtocol(&efi_rng_guid, NULL, (void **)&rng) == EFI_SUCCESS &&
        rng->GetRNG(rng, NULL, 16, bytes) == EFI_SUCCESS)
        return VHDX_OK;
    if (!services_gone(file))
        efi_systab->RuntimeServices->GetTime(&now, NULL);
    file->random_counter++;
    words[0] = mix64(efi_ticks() ^ ((uint64_t)now.Year << 40 | (uint64_t)now.Month << 32 |
                                   (uint64_t)now.Day << 24 | (uint64_t)now.Hour << 16 |
                                   (uint64_t)now.Minute << 8 | now.Second) ^
                     ((uint64_t)now.Nanosecond << 20));
    words[1] = mix64(efi_ticks() + file->random_counter * 0x9e3779b97f4a7c15ull +
                     (uintptr_t)file);
    for (unsigned i = 0; i < 16; i++)
        bytes[i] = (uint8_t)(words[i / 8] >> (8 * (i % 8)));
    return VHDX_OK;
}

/* --- differencing parents ---------------------------------------------------------- */

/* A parent of the chain: its mapping and the path it was found at. */
struct sibling {
    struct efi_esp_file file;
    char path[EFI_ESP_PATH_MAX];
};

/* `relative` from the directory of `from` (a '\\'-separated path on the ESP), or from
 * the root when it starts with '\\' ('..' allowed, never above the root). */
static bool sibling_path(const char *from, const char *relative, char *out, size_t size)
{
    char directory[EFI_ESP_PATH_MAX];
    size_t last = 0;

    for (size_t i = 0; from[i] && i < sizeof directory; i++) {
        directory[i] = from[i];
        if (from[i] == '\\')
            last = i;
    }
    directory[last] = '\0';
    return config_join_path(directory, relative, true, out, size) == NULL;
}

static void esp_close_sibling(void *context)
{
    struct efi_esp_file *file = context;
    struct sibling *sibling = (struct sibling *)((char *)file - offsetof(struct sibling, file));
    struct efi_esp_file **link = &file->child->parents;

    while (*link && *link != file)
        link = &(*link)->next_parent;
    if (*link)
        *link = file->next_parent;
    efi_esp_unmap(file);
    if (!services_gone(file))
        efi_free(sibling);
}

static int esp_open_sibling(void *context, const char *relative_path, bool writable,
                            struct vhdx_platform *platform)
{
    struct efi_esp_file *from = context;
    struct efi_esp_file *child = from->child ? from->child : from;
    struct efi_esp_file **tail;
    struct sibling *sibling;
    const char *detail;
    enum fat_error err;

    if (writable)
        return VHDX_E_READ_ONLY;    /* only the child of a chain is ever written */
    sibling = efi_allocate(sizeof *sibling);
    if (!sibling)
        return VHDX_E_NOMEM;
    if (!sibling_path(from->name, relative_path, sibling->path, sizeof sibling->path)) {
        efi_free(sibling);
        return VHDX_E_PARENT_NOT_FOUND;
    }
    err = efi_esp_map(&sibling->file, from->esp, sibling->path, &detail);
    if (err) {
        efi_free(sibling);
        return err == FAT_E_NOT_FOUND || err == FAT_E_NOT_A_DIR || err == FAT_E_NOT_A_FILE ||
               err == FAT_E_BAD_PATH ? VHDX_E_PARENT_NOT_FOUND : VHDX_E_IO;
    }
    sibling->file.name = sibling->path;
    sibling->file.read_only = true;
    sibling->file.verbose = child->verbose;
    sibling->file.child = child;
    /* Kept in the order of the chain: the child's parent first. */
    for (tail = &child->parents; *tail; tail = &(*tail)->next_parent)
        ;
    *tail = &sibling->file;
    efi_esp_platform(&sibling->file, platform);
    platform->close = esp_close_sibling;
    return VHDX_OK;
}

void efi_esp_platform(struct efi_esp_file *file, struct vhdx_platform *platform)
{
    efi_bs->SetMem(platform, sizeof *platform, 0);
    platform->context = file;
    platform->read = esp_read;
    platform->write = esp_write;
    platform->flush = esp_flush;
    platform->size = esp_size;
    platform->grow = esp_grow;
    platform->allocate = esp_allocate;
    platform->release = esp_release;
    platform->log = esp_log;
    platform->random = esp_random;
    platform->open_sibling = esp_open_sibling;
    /* No VHDX_PLATFORM_GROW_ZEROES: the core zero-fills new blocks itself. */
    platform->flags = file->read_only ? VHDX_PLATFORM_READ_ONLY : 0;
}

/* --- files through the firmware's FAT driver --------------------------------------- */

EFI_STATUS efi_esp_open_file(const struct efi_esp *esp, const char *path, UINT64 mode,
                             EFI_FILE_PROTOCOL **root, EFI_FILE_PROTOCOL **file)
{
    CHAR16 name[EFI_ESP_PATH_MAX];
    EFI_STATUS status;

    if (!esp->file_system)
        return EFI_UNSUPPORTED;
    if (!utf8_to_ucs2(path, name, sizeof name / sizeof name[0]))
        return EFI_INVALID_PARAMETER;
    status = esp->file_system->OpenVolume(esp->file_system, root);
    if (status != EFI_SUCCESS)
        return status;
    status = (*root)->Open(*root, file, name, mode, 0);
    if (status != EFI_SUCCESS)
        (*root)->Close(*root);
    return status;
}

EFI_STATUS efi_esp_change_file(const struct efi_esp *esp, const char *path,
                               const struct efi_esp_change *change)
{
    /* A size needs a handle for writing; attributes change through one for reading,
     * which a read-only file allows (EDK II FatPkg Info.c). */
    UINT64 mode = EFI_FILE_MODE_READ | (change->resize ? EFI_FILE_MODE_WRITE : 0);
    EFI_FILE_PROTOCOL *root, *file;
    EFI_FILE_INFO *info;
    UINTN info_size;
    EFI_STATUS status;

    status = efi_esp_open_file(esp, path, mode, &root, &file);
    if (status != EFI_SUCCESS)
        goto err_open;
    status = efi_get_info(file, &efi_file_info_guid, (void **)&info, &info_size);
    if (status != EFI_SUCCESS)
        goto err_info;
    if (change->resize)
        info->FileSize = change->size;
    info->Attribute = (info->Attribute | change->set_attributes) & ~change->clear_attributes;
    /* The times go back as they were read, so the FAT driver keeps them. */
    status = file->SetInfo(file, &efi_file_info_guid, info_size, info);
    if (status != EFI_SUCCESS)
        goto err_set;
    /*
     * The FAT driver caches file data, and our mapping reads the partition directly
     * next; a directory entry is written before SetInfo returns (and Flush is refused
     * on a handle for reading).  Then the device's own cache.
     */
    if (change->resize)
        status = file->Flush(file);
    if (status == EFI_SUCCESS)
        esp->block_io->FlushBlocks(esp->block_io);

err_set:
    efi_free(info);
err_info:
    file->Close(file);
    root->Close(root);
err_open:
    return status;
}

EFI_STATUS efi_esp_free_space(const struct efi_esp *esp, uint64_t *free_bytes)
{
    EFI_FILE_PROTOCOL *root;
    EFI_FILE_SYSTEM_INFO *info;
    UINTN size;
    EFI_STATUS status;

    if (!esp->file_system)
        return EFI_UNSUPPORTED;
    status = esp->file_system->OpenVolume(esp->file_system, &root);
    if (status != EFI_SUCCESS)
        return status;
    status = efi_get_info(root, &efi_file_system_info_guid, (void **)&info, &size);
    if (status == EFI_SUCCESS) {
        *free_bytes = info->FreeSpace;
        efi_free(info);
    }
    root->Close(root);
    return status;
}

EFI_STATUS efi_esp_new_file(const struct efi_esp *esp, const char *path)
{
    struct efi_esp_change writable = { .clear_attributes = EFI_FILE_READ_ONLY };
    EFI_FILE_PROTOCOL *root, *file;
    EFI_STATUS status;

    /* A file the FAT driver refuses to open for writing cannot be deleted: clear the
     * mark first (it may be ours, left by a mount that never ended). */
    if (efi_esp_change_file(esp, path, &writable) == EFI_SUCCESS &&
        efi_esp_open_file(esp, path, EFI_FILE_MODE_READ | EFI_FILE_MODE_WRITE, &root,
                          &file) == EFI_SUCCESS) {
        status = file->Delete(file);        /* closes the handle, even on a warning */
        root->Close(root);
        if (status != EFI_SUCCESS)
            return status;
    }
    status = efi_esp_open_file(esp, path, EFI_FILE_MODE_READ | EFI_FILE_MODE_WRITE |
                               EFI_FILE_MODE_CREATE, &root, &file);
    if (status != EFI_SUCCESS)
        return status;
    status = file->Flush(file);
    file->Close(file);
    root->Close(root);
    if (status == EFI_SUCCESS)
        esp->block_io->FlushBlocks(esp->block_io);
    return status;
}

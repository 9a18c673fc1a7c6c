/*
 * diskset.c - a set of mounted disks: find the ESP, mount each disk of the
 * configuration through the stages of mount.h, find a mounted file, take the disks
 * away, close them when the platform goes.
 */
#include "console.h"
#include "handoff.h"
#include "mount.h"

void disk_print_diag(const char *path, const char *doing, const struct vhdx_diag *diag)
{
    char reason[200];

    vhdx_describe(diag, reason, sizeof reason);
    con_print("vhdx: %s: %s%s\n", path, doing, reason);
}

/* The directory of the loaded image, from its file path nodes ("\EFI\vhdx"). */
static void image_directory(const EFI_DEVICE_PATH *path, char *out, size_t size)
{
    size_t last_separator = 0;

    efi_path_text(path, out, size);
    for (size_t i = 0; out[i]; i++)
        if (out[i] == '\\' || out[i] == '/')
            last_separator = i;
    /* Keep "\EFI\vhdx" of "\EFI\vhdx\vhdx.efi" ("" for the root directory). */
    out[last_separator] = '\0';
}

EFI_STATUS disk_set_init(struct disk_set *set, EFI_HANDLE image)
{
    EFI_LOADED_IMAGE_PROTOCOL *loaded;
    EFI_STATUS status;

    efi_bs->SetMem(set, sizeof *set, 0);
    status = efi_bs->HandleProtocol(image, &efi_loaded_image_guid, (void **)&loaded);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: cannot find the loaded image: %s\n", efi_status_text(status));
        return status;
    }
    status = efi_esp_init(&set->esp, loaded->DeviceHandle);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: the device the driver was loaded from has no usable Block I/O "
                  "and Disk I/O: %s\n", efi_status_text(status));
        return status;
    }
    image_directory(loaded->FilePath, set->directory, sizeof set->directory);
    return EFI_SUCCESS;
}

/* --- one disk --------------------------------------------------------------------------- */

/* What the configuration asks of a disk: its own line's keys, else the global ones. */
static bool disk_request(struct disk_set *set, const struct config *config,
                         const struct config_disk *entry, struct mounted_disk *disk)
{
    const char *why = config_resolve_path(set->directory, entry->path, disk->path,
                                          sizeof disk->path);

    if (why) {
        con_print("vhdx: %s: %s\n", entry->path, why);
        return false;
    }
    disk->line = entry->line;
    disk->verbose = config->verbose || entry->verbose;
    disk->ram = entry->ram;
    disk->own_tables = entry->own_nfit || config->own_nfit;
    disk->snapshot = entry->snapshot;
    disk->want_writable = !entry->read_only && !entry->ram;
    disk->expand = entry->expand || (!entry->reserve_given && config->expand);
    disk->reserve = entry->reserve_given ? entry->reserve
                    : config->reserve_given ? config->reserve : DISK_DEFAULT_RESERVE;
    return true;
}

/* Make the disk writable only when its room and its guard are there (mount.h, 3). */
static void prepare_writes(struct disk_set *set, struct mounted_disk *disk)
{
    EFI_STATUS status;

    make_room(set, disk);
    if (!disk->writable)
        return;
    status = guard_set(set, disk);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: %s: cannot mark the file read-only on the ESP, which keeps it "
                  "from being deleted while mounted (%s): mounting read-only\n",
                  disk->path, efi_status_text(status));
        disk->writable = false;
    }
}

/* Clear the read-only attribute guard_set put on a disk's file, saying so if it fails. */
static void unguard(struct disk_set *set, struct mounted_disk *disk)
{
    EFI_STATUS status;

    if (!disk->guarded)
        return;
    status = guard_clear(set, disk);
    if (status != EFI_SUCCESS)
        con_print("vhdx: %s: cannot clear the read-only mark set at mount (%s): the next "
                  "mount clears it\n", disk->path, efi_status_text(status));
}

static EFI_STATUS unpublish(struct disk_set *set, struct mounted_disk *disk)
{
    return disk->ram ? ramdisk_unpublish(disk, &set->esp) : blockio_uninstall(disk, &set->esp);
}

/*
 * The one way a disk is taken apart, stages undone in mirror order: unpublish (may fail
 * while in use: then nothing changes, the hand-off included), the hand-off, the guard,
 * the image, the mapping, the memory.
 */
static EFI_STATUS disk_unmount(struct disk_set *set, struct mounted_disk *disk)
{
    EFI_STATUS status = unpublish(set, disk);

    if (status != EFI_SUCCESS) {
        con_print("vhdx: %s: still in use, cannot be removed: %s\n", disk->path,
                  efi_status_text(status));
        return status;
    }
    handoff_withdraw(disk);
    unguard(set, disk);
    close_disk(disk, false);
    unmap_disk(disk);
    efi_free(disk);
    return EFI_SUCCESS;
}

static EFI_STATUS disk_mount(struct disk_set *set, const struct config *config,
                             const struct config_disk *entry, struct mounted_disk **out)
{
    struct mounted_disk *disk;
    EFI_STATUS status;

    disk = efi_allocate_zero(sizeof *disk);
    if (!disk) {
        con_print("vhdx: %s: out of memory\n", entry->path);
        status = EFI_OUT_OF_RESOURCES;
        goto err_alloc;
    }
    if (!disk_request(set, config, entry, disk)) {
        status = EFI_INVALID_PARAMETER;
        goto err_request;
    }
    status = disk->snapshot ? make_snapshot(set, disk) : EFI_SUCCESS;
    if (status != EFI_SUCCESS)
        goto err_snapshot;
    status = map_disk(set, disk);
    if (status != EFI_SUCCESS)
        goto err_map;
    status = open_disk(set, disk);
    if (status != EFI_SUCCESS)
        goto err_open;
    prepare_writes(set, disk);
    print_disk(disk);
    status = disk->ram ? ramdisk_publish(set, disk) : blockio_install(disk, &set->esp);
    if (status != EFI_SUCCESS)
        goto err_publish;
    if (!disk->ram)
        handoff_publish(set, disk);     /* never fails a mount */
    *out = disk;
    return EFI_SUCCESS;

err_publish:
    unguard(set, disk);
    close_disk(disk, false);
err_open:
    unmap_disk(disk);
err_map:
err_snapshot:
err_request:
    efi_free(disk);
err_alloc:
    return status;
}

/* --- the set ---------------------------------------------------------------------------- */

unsigned disk_set_mount(struct disk_set *set, const struct config *config)
{
    struct mounted_disk **tail = &set->disks;

    while (*tail)
        tail = &(*tail)->next;
    for (unsigned i = 0; i < config->disk_count; i++) {
        struct mounted_disk *disk;

        if (disk_mount(set, config, &config->disks[i], &disk) != EFI_SUCCESS)
            continue;
        *tail = disk;
        tail = &disk->next;
        set->count++;
    }
    return set->count;
}

EFI_HANDLE disk_set_find(struct disk_set *set, const char *path, const struct disk_tag **tag)
{
    struct fat_file found;
    const char *detail;
    EFI_HANDLE handle = NULL;
    bool as_parent;

    *tag = NULL;
    if (efi_esp_lookup(&set->esp, path, &found, &detail) != FAT_OK)
        return NULL;
    *tag = registry_find(set->esp.handle, found.entry_offset, found.first_cluster, &handle,
                         &as_parent);
    if (*tag && as_parent)
        *tag = NULL;
    return *tag ? handle : NULL;
}

EFI_STATUS disk_set_unmount(struct disk_set *set)
{
    while (set->disks) {
        struct mounted_disk *disk = set->disks;
        struct mounted_disk *next = disk->next;
        EFI_STATUS status = disk_unmount(set, disk);

        if (status != EFI_SUCCESS)
            return status;
        set->disks = next;
        set->count--;
    }
    return EFI_SUCCESS;
}

void disk_set_shutdown(struct disk_set *set, bool boot_services_gone)
{
    for (struct mounted_disk *disk = set->disks; disk; disk = disk->next) {
        bool clean;

        /* A RAM disk has no file left to close, and stays for the OS. */
        if (disk->stopped || disk->ram)
            continue;
        /* Refuse I/O first: nothing may reach the core while it closes. */
        disk->stopped = true;
        handoff_closing(disk);
        clean = close_disk(disk, boot_services_gone);
        /* Volatile variables are read-only once boot services are gone. */
        if (!boot_services_gone)
            handoff_closed(disk, clean);
        if (boot_services_gone)
            guard_clear_at_exit(set, disk);
        else
            unguard(set, disk);
    }
}

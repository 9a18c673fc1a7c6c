/*
 * map.c - stage 1 of a mount (mount.h): the file's clusters mapped on the ESP, the file
 * refused when it is mounted already, and the medium checked when the disk is to be
 * written.
 */
#include "console.h"
#include "mount.h"

static bool map_file(struct disk_set *set, struct mounted_disk *disk)
{
    const char *detail;
    enum fat_error err = efi_esp_map(&disk->file, &set->esp, disk->path, &detail);

    if (err == FAT_OK)
        return true;
    con_print("vhdx: %s: %s%s%s\n", disk->path,
              err == FAT_E_NOT_FOUND ? "not found on the ESP" : fat_strerror(err),
              detail ? ": " : "", detail ? detail : "");
    return false;
}

/* The file is mounted already (registry.c): name that mount, and what happens now. */
static void report_mounted(const struct disk_set *set, const struct mounted_disk *disk,
                           const struct disk_tag *tag, bool as_parent)
{
    char owner[CONFIG_PATH_MAX];

    registry_owner_name(tag, owner, sizeof owner);
    if (as_parent)
        con_print("vhdx: %s: in use as a parent of %s (mounted by %s), which it must not "
                  "change: not mounted\n", disk->path, tag->path, owner);
    else
        con_print("vhdx: %s: already mounted as %s (%s, by %s): %s\n", disk->path,
                  tag->path, tag->flags & DISK_TAG_RAM ? "a RAM disk"
                  : tag->flags & DISK_TAG_WRITABLE ? "writable" : "read-only", owner,
                  set->uses_mounted ? "using that disk" : "not mounted a second time");
}

/*
 * Can a disk asked for writable be written on this medium?  Not when the ESP is
 * write-protected, nor when the file carries the read-only attribute (unless an
 * earlier mount of ours left it: guard.c), nor when the medium refuses a write the
 * firmware did not say it would refuse.  Says why when not.
 */
static bool medium_writable(struct disk_set *set, struct mounted_disk *disk)
{
    EFI_STATUS status;

    if (set->esp.read_only) {
        con_print("vhdx: %s: the ESP is write-protected: mounting read-only\n", disk->path);
        return false;
    }
    if (disk->file.attributes & FAT_ATTR_READ_ONLY) {
        if (!guard_left_behind(set, disk)) {
            con_print("vhdx: %s: the file is marked read-only: mounting read-only (`attrib "
                      "-r` in the shell clears the mark)\n", disk->path);
            return false;
        }
        status = guard_clear(set, disk);
        con_print("vhdx: %s: the file is still marked read-only by a mount that did not end "
                  "(the machine stopped while it was mounted): %s\n", disk->path,
                  status == EFI_SUCCESS ? "mark cleared" : efi_status_text(status));
        if (status != EFI_SUCCESS)
            return false;
    }
    status = efi_esp_probe_write(&disk->file);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: %s: the ESP refuses writes (%s), though the firmware does not say "
                  "it is write-protected: mounting read-only\n", disk->path,
                  efi_status_text(status));
        return false;
    }
    return true;
}

EFI_STATUS map_disk(struct disk_set *set, struct mounted_disk *disk)
{
    const struct disk_tag *tag;
    EFI_HANDLE twin;
    bool as_parent;
    EFI_STATUS status;

    disk->device_path = disk_device_path(set->esp.device_path, disk->path);
    if (!disk->device_path) {
        con_print("vhdx: %s: out of memory\n", disk->path);
        status = EFI_OUT_OF_RESOURCES;
        goto err_device_path;
    }
    if (!map_file(set, disk)) {
        status = EFI_NOT_FOUND;
        goto err_map;
    }
    tag = registry_find(set->esp.handle, disk->file.entry_offset, disk->file.first_cluster,
                        &twin, &as_parent);
    if (tag) {
        report_mounted(set, disk, tag, as_parent);
        status = EFI_ALREADY_STARTED;
        goto err_mounted;
    }
    /* A disk with this path but no tag: mounted by an older program of ours. */
    if (disk_device_path_taken(disk->device_path)) {
        con_print("vhdx: %s: already mounted\n", disk->path);
        status = EFI_ALREADY_STARTED;
        goto err_taken;
    }
    disk->file.name = disk->path;
    disk->file.verbose = disk->verbose;
    disk->medium_writable = disk->want_writable && medium_writable(set, disk);
    return EFI_SUCCESS;

err_taken:
err_mounted:
    efi_esp_unmap(&disk->file);
err_map:
    efi_free(disk->device_path);
    disk->device_path = NULL;
err_device_path:
    return status;
}

void unmap_disk(struct mounted_disk *disk)
{
    efi_esp_unmap(&disk->file);
    efi_free(disk->device_path);
    disk->device_path = NULL;
}

/*
 * snapshot.c - `snapshot`: a throw-away session on top of a disk (issue 10).
 *
 * Before the mount's stages (mount.h), a differencing child of the named image is made
 * beside it on the ESP, empty, with vhdx_create: "golden.vhdx" gets
 * "golden-snapshot.avhdx" (relative_path .\golden.vhdx, parent_linkage the parent's
 * DataWriteGuid, absolute_win32_path its path from the ESP's root).  The mount then goes
 * on with the child: its parent is opened read-only and never changes; every write goes
 * to the child.  The child lives until the next mount with `snapshot`, which deletes it
 * and starts afresh (until then it can be read on a host: `vhdx cat`, libvhdi).
 *
 * Refused when the parent is mounted writable (a child must not see its parent change)
 * and when the old child is mounted (it must not be deleted under that mount).
 */
#include "console.h"
#include "mount.h"

#define SNAPSHOT_SUFFIX "-snapshot.avhdx"
#define SNAPSHOT_CREATOR "vhdx-efi snapshot"

/* "\disks\golden.vhdx" -> "\disks\golden-snapshot.avhdx"; false when it does not fit. */
static bool snapshot_path(const char *parent, char *out, size_t size)
{
    size_t n = str_length(parent), stem = n, suffix = sizeof SNAPSHOT_SUFFIX - 1;

    if (n >= 5 && parent[n - 5] == '.' && (parent[n - 4] | 0x20) == 'v' &&
        (parent[n - 3] | 0x20) == 'h' && (parent[n - 2] | 0x20) == 'd' &&
        (parent[n - 1] | 0x20) == 'x')
        stem = n - 5;
    if (stem + suffix + 1 > size)
        return false;
    efi_bs->CopyMem(out, (void *)parent, stem);
    efi_bs->CopyMem(out + stem, SNAPSHOT_SUFFIX, suffix + 1);
    return true;
}

/* The last component of a path ("golden.vhdx"). */
static const char *file_name(const char *path)
{
    const char *name = path;

    for (const char *p = path; *p; p++)
        if (*p == '\\')
            name = p + 1;
    return name;
}

/* Is the file at `path` mounted by any program of ours (as a disk, not as a parent)? */
static const struct disk_tag *mounted_as_disk(struct disk_set *set, const char *path)
{
    struct fat_file found;
    const char *detail;
    EFI_HANDLE handle;
    bool as_parent;
    const struct disk_tag *tag;

    if (efi_esp_lookup(&set->esp, path, &found, &detail) != FAT_OK)
        return NULL;
    tag = registry_find(set->esp.handle, found.entry_offset, found.first_cluster, &handle,
                        &as_parent);
    return tag && !as_parent ? tag : NULL;
}

/* Open the parent read-only for its figures; refuse it when it is mounted writable. */
static EFI_STATUS parent_info(struct disk_set *set, const struct mounted_disk *disk,
                              struct vhdx_info *info)
{
    const struct disk_tag *tag = mounted_as_disk(set, disk->snapshot_of);
    struct efi_esp_file file;
    struct vhdx_platform platform;
    struct vhdx_disk *vhdx;
    struct vhdx_diag diag;
    const char *detail;
    char owner[CONFIG_PATH_MAX];
    enum fat_error err;

    if (tag && (tag->flags & DISK_TAG_WRITABLE)) {
        registry_owner_name(tag, owner, sizeof owner);
        con_print("vhdx: %s: snapshot: the disk is mounted writable as %s (by %s), and a "
                  "snapshot's parent must not change: not mounted\n", disk->snapshot_of,
                  tag->path, owner);
        return EFI_ACCESS_DENIED;
    }
    err = efi_esp_map(&file, &set->esp, disk->snapshot_of, &detail);
    if (err != FAT_OK) {
        con_print("vhdx: %s: %s\n", disk->snapshot_of,
                  err == FAT_E_NOT_FOUND ? "not found on the ESP" : fat_strerror(err));
        return EFI_NOT_FOUND;
    }
    file.name = disk->snapshot_of;
    file.read_only = true;
    efi_esp_platform(&file, &platform);
    if (vhdx_open(&platform, 0, &vhdx, &diag) != VHDX_OK) {
        disk_print_diag(disk->snapshot_of, "", &diag);
        efi_esp_unmap(&file);
        return EFI_LOAD_ERROR;
    }
    vhdx_get_info(vhdx, info);
    vhdx_close(vhdx, NULL);
    efi_esp_unmap(&file);
    return EFI_SUCCESS;
}

/* The child, empty on the ESP, made a VHDX through the platform (which grows it). */
static EFI_STATUS create_child(struct disk_set *set, const struct mounted_disk *disk,
                               const char *child, const struct vhdx_info *info)
{
    char linkage[39], relative[CONFIG_PATH_MAX];
    struct vhdx_locator_entry locator[3] = {
        { "parent_linkage", linkage }, { "relative_path", relative },
        { "absolute_win32_path", disk->snapshot_of } };
    struct vhdx_create_options options = {
        .virtual_size = info->virtual_size, .logical_sector_size = info->logical_sector_size,
        .physical_sector_size = info->physical_sector_size, .locator = locator,
        .locator_count = 3, .creator = SNAPSHOT_CREATOR };
    struct efi_esp_file file;
    struct vhdx_platform platform;
    struct vhdx_diag diag;
    const char *detail;
    EFI_STATUS status;
    int rc;

    vhdx_guid_format(&info->data_write_guid, linkage);
    con_format(relative, sizeof relative, ".\\%s", file_name(disk->snapshot_of));
    status = efi_esp_new_file(&set->esp, child);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: %s: snapshot: cannot make %s on the ESP: %s\n", disk->snapshot_of,
                  child, efi_status_text(status));
        return status;
    }
    if (efi_esp_map(&file, &set->esp, child, &detail) != FAT_OK) {
        con_print("vhdx: %s: snapshot: %s is not on the ESP after it was made\n",
                  disk->snapshot_of, child);
        return EFI_DEVICE_ERROR;
    }
    file.name = child;
    file.growable = true;
    efi_esp_platform(&file, &platform);
    rc = vhdx_create(&platform, &options, &diag);
    efi_esp_unmap(&file);
    if (rc != VHDX_OK) {
        disk_print_diag(child, "snapshot: cannot make the child: ", &diag);
        return EFI_DEVICE_ERROR;
    }
    return EFI_SUCCESS;
}

EFI_STATUS make_snapshot(struct disk_set *set, struct mounted_disk *disk)
{
    char child[CONFIG_PATH_MAX], owner[CONFIG_PATH_MAX];
    const struct disk_tag *tag;
    struct vhdx_info info;
    EFI_STATUS status;

    efi_bs->CopyMem(disk->snapshot_of, disk->path, sizeof disk->snapshot_of);
    if (!snapshot_path(disk->snapshot_of, child, sizeof child)) {
        con_print("vhdx: %s: snapshot: the path is too long for its child's\n", disk->path);
        return EFI_INVALID_PARAMETER;
    }
    if (!set->esp.file_system || set->esp.read_only) {
        con_print("vhdx: %s: snapshot: the ESP cannot take a new file here (%s): not "
                  "mounted\n", disk->path, set->esp.read_only ? "write-protected"
                                                               : "no FAT driver");
        return EFI_WRITE_PROTECTED;
    }
    status = parent_info(set, disk, &info);
    if (status != EFI_SUCCESS)
        return status;
    tag = mounted_as_disk(set, child);
    if (tag) {
        registry_owner_name(tag, owner, sizeof owner);
        con_print("vhdx: %s: snapshot: its child %s is mounted (by %s), and is not made "
                  "afresh under that mount: not mounted\n", disk->path, child, owner);
        return EFI_ALREADY_STARTED;
    }
    status = create_child(set, disk, child, &info);
    if (status != EFI_SUCCESS)
        return status;
    con_print("vhdx: %s: snapshot: writes go to %s, made now (the next mount with snapshot "
              "starts it afresh); %s does not change\n", disk->path, child, disk->path);
    efi_bs->CopyMem(disk->path, child, sizeof disk->path);
    return EFI_SUCCESS;
}

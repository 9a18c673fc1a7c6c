/*
 * open.c - stage 2 of a mount (mount.h): the image opened once, writable when it is to
 * be written, with its differencing parents (each mapped read-only by the platform).
 */
#include "console.h"
#include "mount.h"

/*
 * A parent of the chain mounted writable elsewhere would change under the child: refuse
 * (the registry has no other way to stop that program now).  Says why.
 */
static bool parents_free(struct disk_set *set, const struct mounted_disk *disk)
{
    for (const struct efi_esp_file *p = disk->file.parents; p; p = p->next_parent) {
        EFI_HANDLE twin;
        bool as_parent;
        const struct disk_tag *tag = registry_find(set->esp.handle, p->entry_offset,
                                                   p->first_cluster, &twin, &as_parent);
        char owner[CONFIG_PATH_MAX];

        if (!tag || as_parent || !(tag->flags & DISK_TAG_WRITABLE))
            continue;
        registry_owner_name(tag, owner, sizeof owner);
        con_print("vhdx: %s: its parent %s is mounted writable as %s (by %s): a child must "
                  "not see its parent change: not mounted\n", disk->path, p->name, tag->path,
                  owner);
        return false;
    }
    return true;
}

EFI_STATUS open_disk(struct disk_set *set, struct mounted_disk *disk)
{
    /* A RAM disk is a copy: its file is only read, header included. */
    bool writable = disk->medium_writable && !disk->ram;
    uint64_t start = efi_ticks();
    struct vhdx_diag diag;
    int rc;

    disk->file.read_only = !writable;
    efi_esp_platform(&disk->file, &disk->platform);
    rc = vhdx_open(&disk->platform, writable ? VHDX_OPEN_WRITABLE : 0, &disk->vhdx, &diag);
    disk->open_ms = (efi_ticks() - start) / efi_ticks_per_ms();
    if (rc != VHDX_OK) {
        disk_print_diag(disk->path, "", &diag);
        disk->vhdx = NULL;
        return vhdx_error_class(diag.code) == VHDX_CLASS_NOT_FOUND ? EFI_NOT_FOUND
                                                                   : EFI_LOAD_ERROR;
    }
    vhdx_get_info(disk->vhdx, &disk->info);
    disk->writable = !disk->info.read_only;
    if (!parents_free(set, disk)) {
        close_disk(disk, false);
        return EFI_ACCESS_DENIED;
    }
    return EFI_SUCCESS;
}

bool close_disk(struct mounted_disk *disk, bool boot_services_gone)
{
    struct vhdx_diag diag;
    int rc;

    if (!disk->vhdx)
        return false;
    disk->file.boot_services_gone = boot_services_gone;
    rc = vhdx_close(disk->vhdx, &diag);
    disk->vhdx = NULL;
    if (boot_services_gone)
        return rc == VHDX_OK;   /* no console either */
    if (rc != VHDX_OK)
        disk_print_diag(disk->path, "closing: ", &diag);
    else if (disk->verbose)
        con_print("vhdx: %s: closed\n", disk->path);
    return rc == VHDX_OK;
}

static const char *type_name(enum vhdx_disk_type type)
{
    return type == VHDX_TYPE_FIXED ? "fixed" : type == VHDX_TYPE_DYNAMIC ? "dynamic"
                                                                         : "differencing";
}

/* ", over \golden.vhdx (relative_path 'golden.vhdx')" for each parent of the chain. */
static void chain_text(const struct mounted_disk *disk, char *out, size_t size)
{
    const struct efi_esp_file *parent = disk->file.parents;
    const struct vhdx_disk *level = disk->vhdx;
    size_t used = 0;

    out[0] = '\0';
    while (level && vhdx_parent(level) && parent && used + 1 < size) {
        struct vhdx_info info;

        vhdx_get_info(level, &info);
        used += con_format(out + used, size - used, ", over %s (%s '%s'%s)", parent->name,
                           info.parent_key ? info.parent_key : "?",
                           info.parent_path ? info.parent_path : "?",
                           info.parent_linkage2 ? ", parent_linkage2" : "");
        level = vhdx_parent(level);
        parent = parent->next_parent;
    }
}

void print_disk(const struct mounted_disk *disk)
{
    const struct vhdx_info *info = &disk->info;
    char size[24], log[64], physical[32] = "", chain[400];

    con_size_text(size, sizeof size, info->virtual_size);
    if (info->physical_sector_size != info->logical_sector_size)
        con_format(physical, sizeof physical, " (%u physical)", info->physical_sector_size);
    if (info->log_state == VHDX_LOG_WAS_CLEAN)
        con_format(log, sizeof log, "log clean");
    else
        con_format(log, sizeof log, "log replayed %swith %u entries",
                   info->log_state == VHDX_LOG_REPLAYED_IN_MEMORY ? "in memory " : "",
                   info->log_entries_replayed);
    chain_text(disk, chain, sizeof chain);
    con_print("vhdx: %s: %s, %s, %u-byte sectors%s, %s%s%s\n", disk->path,
              type_name(info->type), size, info->logical_sector_size, physical, log,
              disk->ram ? ", RAM disk" : disk->writable ? "" : ", read-only", chain);
    if (disk->verbose)
        con_print("vhdx: %s: %u extent(s) on the ESP, file %llu bytes, data ends at %llu, "
                  "%u MiB blocks, %llu of %llu present, opened in %llu ms (core peak %llu "
                  "KiB)\n", disk->path, disk->file.extent_count,
                  (unsigned long long)disk->file.size, (unsigned long long)info->used_size,
                  info->block_size >> 20,
                  (unsigned long long)(info->blocks_present + info->blocks_partial),
                  (unsigned long long)info->blocks_total, (unsigned long long)disk->open_ms,
                  (unsigned long long)(info->memory_peak >> 10));
}

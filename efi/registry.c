/*
 * registry.c - which files of an ESP are mounted, by any program of ours, in this boot.
 *
 * Two mounts of one file both allocate new blocks at the same place in it, and each
 * overwrites what the other wrote.  A name does not identify a file on FAT: the long
 * name, its 8.3 alias (LONGFI~1.VHD) and any case of it (Ärger.vhdx, ärger.vhdx) reach
 * the same file.  What does is where it is on the ESP: the byte offset of its 8.3
 * directory entry (a long name's entries end in it) or its first cluster (a rename that
 * moves the entry keeps it), both from platform/fat.c's lookup.
 *
 * And it must be seen by every program of ours, not just this instance: two `load`s of
 * vhdx.efi, a Driver#### entry and vhdxboot.efi.  So each mounted disk's handle carries
 * a tag protocol (DISK_TAG_GUID) beside its Block I/O, installed and uninstalled with
 * it; LocateHandleBuffer finds them all.  The firmware's handle database is the
 * registry: nothing is shared but these records, and a disk taken away (unload, a boot
 * program that returns) takes its tag with it.
 *
 * A differencing child reads its parents, which must then not change: revision 2 of the
 * tag lists them, so a later mount of a parent is refused too (and a child is refused
 * while one of its parents is mounted writable: open.c).
 */
#include "console.h"
#include "mount.h"

EFI_GUID disk_tag_guid = DISK_TAG_GUID;

void registry_tag(struct mounted_disk *disk, const struct efi_esp *esp)
{
    struct disk_tag *tag = &disk->tag;

    efi_bs->SetMem(tag, sizeof *tag, 0);
    tag->revision = DISK_TAG_REVISION;
    tag->flags = disk->writable ? DISK_TAG_WRITABLE : 0;
    tag->esp = esp->handle;
    tag->entry_offset = disk->file.entry_offset;
    tag->first_cluster = disk->file.first_cluster;
    tag->owner = efi_image_handle;
    if (disk->ram)
        tag->flags |= DISK_TAG_RAM;
    for (size_t i = 0; disk->path[i] && i + 1 < sizeof tag->path; i++)
        tag->path[i] = disk->path[i];
    for (const struct efi_esp_file *p = disk->file.parents;
         p && tag->parent_count < DISK_TAG_MAX_PARENTS; p = p->next_parent) {
        tag->parents[tag->parent_count].entry_offset = p->entry_offset;
        tag->parents[tag->parent_count].first_cluster = p->first_cluster;
        tag->parent_count++;
    }
}

static bool same_file(uint64_t entry_a, uint32_t cluster_a, uint64_t entry_b,
                      uint32_t cluster_b)
{
    return entry_a == entry_b || (cluster_a != 0 && cluster_a == cluster_b);
}

const struct disk_tag *registry_find(EFI_HANDLE esp, uint64_t entry_offset,
                                     uint32_t first_cluster, EFI_HANDLE *handle,
                                     bool *parent)
{
    const struct disk_tag *found = NULL;
    EFI_HANDLE *handles = NULL;
    UINTN count = 0;

    *parent = false;
    if (efi_bs->LocateHandleBuffer(ByProtocol, &disk_tag_guid, NULL, &count,
                                   &handles) != EFI_SUCCESS)
        return NULL;
    for (UINTN i = 0; i < count && !found; i++) {
        struct disk_tag *tag;

        if (efi_bs->HandleProtocol(handles[i], &disk_tag_guid, (void **)&tag) !=
                EFI_SUCCESS || tag->revision < 1 || tag->esp != esp)
            continue;
        if (same_file(tag->entry_offset, tag->first_cluster, entry_offset, first_cluster)) {
            found = tag;
            *handle = handles[i];
        }
        for (UINT32 k = 0; !found && tag->revision >= 2 && k < tag->parent_count &&
                           k < DISK_TAG_MAX_PARENTS; k++) {
            if (same_file(tag->parents[k].entry_offset, tag->parents[k].first_cluster,
                          entry_offset, first_cluster)) {
                found = tag;
                *handle = handles[i];
                *parent = true;
            }
        }
    }
    efi_free(handles);
    return found;
}

void registry_owner_name(const struct disk_tag *tag, char *out, size_t size)
{
    EFI_LOADED_IMAGE_PROTOCOL *loaded;

    out[0] = '\0';
    if (efi_bs->HandleProtocol(tag->owner, &efi_loaded_image_guid, (void **)&loaded) ==
        EFI_SUCCESS)
        efi_path_text(loaded->FilePath, out, size);
    if (!out[0])
        con_format(out, size, "another program");
}

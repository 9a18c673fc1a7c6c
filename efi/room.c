/*
 * room.c - stage 3 of a mount (mount.h): the room for new blocks a writable disk needs,
 * made at mount by vhdx_reserve while the platform can still extend the file through
 * the firmware's FAT driver; the figures come from the open image (vhdx_get_info).
 */
#include "console.h"
#include "mount.h"

/* The largest FAT file is 4 GiB - 1; VHDX allocates in whole MiB below that. */
#define FAT_FILE_LIMIT 0xFFF00000ull

/* The room a writable mount needs (mount.h): bytes, whole blocks, at most what is left. */
static uint64_t room_needed(const struct mounted_disk *disk, const struct vhdx_info *info)
{
    uint64_t unallocated = info->room_wanted;
    uint64_t reserve = (disk->reserve + info->block_size - 1) / info->block_size *
                       info->block_size;

    return disk->expand || reserve > unallocated ? unallocated : reserve;
}

/*
 * The room cannot be made: say why and what would do, in one line.  `possible` is the
 * most room the file could have; `esp_helps`: freeing space on the ESP would.
 */
static void room_short(const struct mounted_disk *disk, uint64_t need, uint64_t possible,
                       const char *why, bool esp_helps)
{
    const char *free_it = esp_helps ? "free space on the ESP, or " : "";
    char need_text[24], possible_text[24];

    con_size_text(need_text, sizeof need_text, need);
    con_size_text(possible_text, sizeof possible_text, possible);
    if (disk->expand)
        con_print("vhdx: %s: cannot expand the file for all its blocks (%s of room): %s: "
                  "mounting read-only (%sdrop expand)\n", disk->path, need_text, why,
                  free_it);
    else if (possible == 0)
        con_print("vhdx: %s: no room for new blocks, and the reserve asks for %s: %s: "
                  "mounting read-only (%sset reserve=0 to mount it writable with no room to "
                  "grow)\n", disk->path, need_text, why, free_it);
    else
        con_print("vhdx: %s: room for at most %s of new blocks, and the reserve asks for %s: "
                  "%s: mounting read-only (%saccept less room with reserve=%lluM; reserve=0 "
                  "for none)\n", disk->path, possible_text, need_text, why, free_it,
                  (unsigned long long)(possible >> 20));
}

/*
 * Is `need` bytes of room past the data possible at all?  Not past FAT's largest file,
 * nor past the ESP's free space.  Says why not.
 */
static bool room_possible(struct disk_set *set, const struct mounted_disk *disk,
                          const struct vhdx_info *info, uint64_t need)
{
    uint64_t limit, free_bytes = 0, possible;
    char text[24], why[96];
    EFI_STATUS status;

    limit = FAT_FILE_LIMIT > info->used_size ? FAT_FILE_LIMIT - info->used_size : 0;
    limit -= limit % info->block_size;
    if (limit < need) {
        con_size_text(text, sizeof text, info->used_size + need);
        con_format(why, sizeof why, "the file would be %s, and a FAT file holds at most "
                   "4 GiB - 1 byte", text);
        room_short(disk, need, limit, why, false);
        return false;
    }
    status = efi_esp_free_space(&set->esp, &free_bytes);
    if (status != EFI_SUCCESS) {
        con_format(why, sizeof why, "the firmware cannot grow files on the ESP (%s)",
                   efi_status_text(status));
        room_short(disk, need, disk->room - disk->room % info->block_size, why, false);
        return false;
    }
    possible = info->file_size > info->used_size ? info->file_size - info->used_size : 0;
    possible += free_bytes;
    possible = possible < limit ? possible - possible % info->block_size : limit;
    if (possible < need) {
        con_size_text(text, sizeof text, free_bytes);
        con_format(why, sizeof why, "the ESP has %s free", text);
        room_short(disk, need, possible, why, true);
        return false;
    }
    return true;
}

void make_room(struct disk_set *set, struct mounted_disk *disk)
{
    const struct vhdx_info *info = &disk->info;
    char old_text[24], new_text[24], reason[200];
    uint64_t need, old_size = info->file_size;
    int rc;

    if (!disk->writable)
        return;
    disk->room = info->file_size > info->used_size ? info->file_size - info->used_size : 0;
    /* Every block present (a true fixed image): nothing is ever allocated.  QEMU's
     * "fixed" images start with blocks in the ZERO state and allocate like dynamic ones. */
    need = room_needed(disk, info);
    if (disk->room >= need) {
        if (disk->verbose)
            con_print("vhdx: %s: room for %llu new block(s) of %u MiB\n", disk->path,
                      (unsigned long long)(disk->room / info->block_size),
                      info->block_size >> 20);
        return;
    }
    if (!room_possible(set, disk, info, need)) {
        disk->writable = false;
        return;
    }
    /* The platform extends the file through the FAT driver while it is growable: now,
     * before the disk is served, and never after. */
    disk->file.growable = true;
    rc = vhdx_reserve(disk->vhdx, need);
    disk->file.growable = false;
    vhdx_get_info(disk->vhdx, &disk->info);
    con_size_text(old_text, sizeof old_text, old_size);
    con_size_text(new_text, sizeof new_text, info->used_size + need);
    if (rc != VHDX_OK) {
        vhdx_describe(vhdx_last_diag(disk->vhdx), reason, sizeof reason);
        con_print("vhdx: %s: cannot extend the file from %s to %s for new blocks: %s: "
                  "mounting read-only\n", disk->path, old_text, new_text, reason);
        disk->writable = false;
        return;
    }
    disk->room = disk->file.size - info->used_size;
    if (disk->verbose)
        con_print("vhdx: %s: extended the file from %s to %s for new blocks\n",
                  disk->path, old_text, new_text);
}

/*
 * guard.c - keep a mounted file from being deleted or changed through the firmware's
 * FAT driver, and tell our own read-only mark from the user's after a crash.
 *
 * The driver writes the file's clusters directly (platform/efi_esp.c); if the file were
 * deleted while mounted (the shell's `rm` answers "Delete successful"), its clusters
 * would go to the next file written on the ESP and both would be destroyed.  EDK II's
 * FAT driver refuses to open a file with the read-only attribute for writing, and
 * deleting, renaming, truncating or overwriting a file all need such a handle, while
 * the attribute itself can be changed through a handle opened for reading (FatPkg
 * Open.c and Info.c; in OVMF, `rm` then answers "Access Denied").  So a writable disk's
 * file carries the attribute for as long as it is mounted: set at mount, cleared at
 * unmount, before ExitBootServices and at reset (shutdown.c).  An open handle would not
 * do: FatDelete deletes a file that other handles still have open.
 *
 * The mark must not outlive a crash as a read-only file forever (a file the user marked
 * read-only mounts read-only).  Before setting the attribute, a non-volatile UEFI
 * variable records which file it is (the ESP partition's device path node, the file's
 * directory entry offset and first cluster); it is deleted after the attribute is
 * cleared.  A mount that finds the attribute and a matching record knows the attribute
 * is ours, left by a mount that never ended, and clears it.  A crash between the two
 * steps leaves a record without the attribute, which means nothing and is replaced by
 * the next mount of that file.
 *
 * Firmware that does not signal the "before ExitBootServices" group (Debian 12's OVMF
 * does not) leaves only the ExitBootServices event, where the FAT driver may no longer
 * be called nor memory allocated.  There the attribute byte is cleared in the file's
 * directory entry directly, through the ESP's Block I/O into a block set aside at mount
 * (the FAT driver, which will never run again, cannot then write an older copy over
 * it), and the record is deleted: it is a runtime variable for that reason, since the
 * variable driver may already have switched to runtime when our event runs.
 *
 * What stays possible: clearing the attribute on purpose (`attrib -r`) and then
 * deleting the file, a firmware FAT driver that ignores the attribute, or a program
 * that writes the ESP's FAT itself.
 */
#include "console.h"
#include "mount.h"

/* The vendor GUID of our variables. */
#define GUARD_VARIABLE_GUID \
    { 0x9ffbf3b8, 0x735b, 0x4c4c, { 0xbf, 0x10, 0xa5, 0x76, 0xee, 0x6f, 0x53, 0xa5 } }
#define GUARD_RECORD_REVISION 1
#define GUARD_ESP_NODE_MAX 42       /* a HD() node: number, start, size, signature */
#define GUARD_VARIABLE_ATTRIBUTES \
    (EFI_VARIABLE_NON_VOLATILE | EFI_VARIABLE_BOOTSERVICE_ACCESS | EFI_VARIABLE_RUNTIME_ACCESS)
/* FAT directory entry fields (Microsoft FAT specification, section 6). */
#define DIR_ATTRIBUTES        11
#define DIR_FIRST_CLUSTER_HI  20
#define DIR_FIRST_CLUSTER_LO  26

static EFI_GUID guard_variable_guid = GUARD_VARIABLE_GUID;

/* What the variable holds: which file of which ESP. */
struct guard_record {
    UINT32 revision;
    UINT32 first_cluster;
    UINT64 entry_offset;
    UINT8 esp_node[GUARD_ESP_NODE_MAX];     /* last node of the ESP's path, zero-padded */
};

/* The record of the mapped file, and the variable's name ("VhdxGuard-1234abcd"). */
static void guard_identify(const struct disk_set *set, const struct mounted_disk *disk,
                           struct guard_record *record, CHAR16 *name, size_t name_chars)
{
    const EFI_DEVICE_PATH *node = set->esp.device_path, *last = NULL;
    char text[24];
    size_t length;

    efi_bs->SetMem(record, sizeof *record, 0);
    record->revision = GUARD_RECORD_REVISION;
    record->first_cluster = disk->file.first_cluster;
    record->entry_offset = disk->file.entry_offset;
    /* The partition, not the path to it: the same after the disk moves to another port. */
    for (; !IsDevicePathEnd(node) &&
           (size_t)DevicePathNodeLength(node) >= END_DEVICE_PATH_LENGTH;
         node = NextDevicePathNode(node))
        last = node;
    if (last) {
        length = DevicePathNodeLength(last);
        if (length > sizeof record->esp_node)
            length = sizeof record->esp_node;
        efi_bs->CopyMem(record->esp_node, (void *)last, length);
    }
    con_format(text, sizeof text, "VhdxGuard-%08x",
               (unsigned)vhdx_crc32c(0, record, sizeof *record));
    utf8_to_ucs2(text, name, name_chars);
}

bool guard_left_behind(struct disk_set *set, const struct mounted_disk *disk)
{
    struct guard_record want, found;
    CHAR16 name[32];
    UINTN size = sizeof found;
    UINT32 attributes;

    guard_identify(set, disk, &want, name, ARRAY_SIZE(name));
    if (efi_systab->RuntimeServices->GetVariable(name, &guard_variable_guid, &attributes,
                                                 &size, &found) != EFI_SUCCESS ||
        size != sizeof found)
        return false;
    for (size_t i = 0; i < sizeof found; i++)
        if (((const uint8_t *)&found)[i] != ((const uint8_t *)&want)[i])
            return false;
    return true;
}

/* Set or clear the FAT read-only attribute (through a handle opened for reading). */
static EFI_STATUS set_read_only(struct disk_set *set, const char *path, bool read_only)
{
    struct efi_esp_change change = { 0 };

    if (read_only)
        change.set_attributes = EFI_FILE_READ_ONLY;
    else
        change.clear_attributes = EFI_FILE_READ_ONLY;
    return efi_esp_change_file(&set->esp, path, &change);
}

EFI_STATUS guard_set(struct disk_set *set, struct mounted_disk *disk)
{
    struct guard_record record;
    CHAR16 name[32];
    EFI_STATUS status;

    /* Without a FAT driver on the ESP, nothing in the firmware can delete the file. */
    if (!set->esp.file_system)
        return EFI_SUCCESS;
    guard_identify(set, disk, &record, name, ARRAY_SIZE(name));
    status = efi_systab->RuntimeServices->SetVariable(name, &guard_variable_guid,
                                                      GUARD_VARIABLE_ATTRIBUTES,
                                                      sizeof record, &record);
    if (status != EFI_SUCCESS)
        con_print("vhdx: %s: warning: cannot record the read-only mark in a UEFI variable "
                  "(%s): should the machine stop while the disk is mounted, the next mount "
                  "takes the file for one the user marked read-only\n", disk->path,
                  efi_status_text(status));
    status = set_read_only(set, disk->path, true);
    if (status != EFI_SUCCESS) {
        efi_systab->RuntimeServices->SetVariable(name, &guard_variable_guid, 0, 0, NULL);
        return status;
    }
    disk->guarded = true;
    /* One ESP block, plus room to align it as the device asks. */
    disk->guard_block = efi_allocate(set->esp.block_size + set->esp.io_align);
    return EFI_SUCCESS;
}

EFI_STATUS guard_clear(struct disk_set *set, struct mounted_disk *disk)
{
    struct guard_record record;
    CHAR16 name[32];
    EFI_STATUS status;

    status = set_read_only(set, disk->path, false);
    if (status != EFI_SUCCESS)
        return status;
    disk->guarded = false;
    efi_free(disk->guard_block);
    disk->guard_block = NULL;
    disk->file.attributes &= (uint8_t)~FAT_ATTR_READ_ONLY;
    guard_identify(set, disk, &record, name, ARRAY_SIZE(name));
    efi_systab->RuntimeServices->SetVariable(name, &guard_variable_guid, 0, 0, NULL);
    return EFI_SUCCESS;
}

void guard_clear_at_exit(struct disk_set *set, struct mounted_disk *disk)
{
    const struct efi_esp *esp = &set->esp;
    EFI_BLOCK_IO_PROTOCOL *block_io = esp->block_io;
    struct guard_record record;
    CHAR16 name[32];
    uintptr_t start = (uintptr_t)disk->guard_block;
    uint8_t *block, *entry;
    EFI_LBA lba = disk->file.entry_offset / esp->block_size;
    uint32_t first_cluster;

    if (!disk->guarded || !disk->guard_block)
        return;
    block = (uint8_t *)(start + (esp->io_align - start % esp->io_align) % esp->io_align);
    entry = block + disk->file.entry_offset % esp->block_size;
    if (block_io->ReadBlocks(block_io, esp->media_id, lba, esp->block_size, block) !=
        EFI_SUCCESS)
        return;
    /* Still our file's entry (a FAT12/16 entry keeps 0 in the high half)? */
    first_cluster = (uint32_t)entry[DIR_FIRST_CLUSTER_LO] |
                    (uint32_t)entry[DIR_FIRST_CLUSTER_LO + 1] << 8 |
                    (uint32_t)entry[DIR_FIRST_CLUSTER_HI] << 16 |
                    (uint32_t)entry[DIR_FIRST_CLUSTER_HI + 1] << 24;
    if (first_cluster != disk->file.first_cluster ||
        !(entry[DIR_ATTRIBUTES] & FAT_ATTR_READ_ONLY))
        return;
    entry[DIR_ATTRIBUTES] &= (uint8_t)~FAT_ATTR_READ_ONLY;
    if (block_io->WriteBlocks(block_io, esp->media_id, lba, esp->block_size, block) !=
            EFI_SUCCESS ||
        block_io->FlushBlocks(block_io) != EFI_SUCCESS)
        return;
    disk->guarded = false;
    guard_identify(set, disk, &record, name, ARRAY_SIZE(name));
    efi_systab->RuntimeServices->SetVariable(name, &guard_variable_guid, 0, 0, NULL);
}

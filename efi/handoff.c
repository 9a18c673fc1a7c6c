/*
 * handoff.c - the hand-off variables (see handoff.h; layout: platform/handoff_format.h).
 *
 * The state of each published disk (its variable's name and the record) is pool memory
 * owned here, reached through disk->handoff; the WriteBlocks wrapper finds its disk from
 * the protocol instance (container-of), as blockio.c does.
 */
#include "handoff.h"

#include "byteorder.h"
#include "console.h"
#include "handoff_format.h"

#define ATTRIBUTES (EFI_VARIABLE_BOOTSERVICE_ACCESS | EFI_VARIABLE_RUNTIME_ACCESS)

static EFI_GUID handoff_guid = VHDX_HANDOFF_GUID_INIT;

struct handoff {
    EFI_BLOCK_WRITE write_blocks;           /* the disk's own, while it is wrapped */
    CHAR16 name[16];                        /* L"VhdxDisk3" */
    unsigned index;
    uint8_t record[VHDX_HANDOFF_MAX_SIZE];
    size_t size;
    struct vhdx_info final;                 /* handoff_closing's snapshot */
};

/* The hard-drive media node (UEFI 2.10 section 10.3.5.1): 42 bytes, read by offset
 * (gnu-efi's struct is not packed, and nodes are byte-aligned). */
#define HD_NODE_LENGTH 42
#define HD_PARTITION_NUMBER 4
#define HD_SIGNATURE 24
#define HD_SIGNATURE_TYPE 41

struct esp_partition {
    uint32_t number;
    uint8_t signature[16];
    uint8_t signature_type;                 /* SIGNATURE_TYPE_MBR or _GUID */
};

/* The ESP's partition from the last hard-drive node of its device path. */
static bool esp_partition(const EFI_DEVICE_PATH *path, struct esp_partition *out)
{
    bool found = false;

    for (const EFI_DEVICE_PATH *node = path; node && !IsDevicePathEnd(node);
         node = NextDevicePathNode(node)) {
        size_t length = (size_t)DevicePathNodeLength(node);
        const uint8_t *bytes = (const uint8_t *)node;

        if (length < sizeof(EFI_DEVICE_PATH))
            break;
        if (DevicePathType(node) == MEDIA_DEVICE_PATH &&
            DevicePathSubType(node) == MEDIA_HARDDRIVE_DP && length >= HD_NODE_LENGTH &&
            (bytes[HD_SIGNATURE_TYPE] == SIGNATURE_TYPE_MBR ||
             bytes[HD_SIGNATURE_TYPE] == SIGNATURE_TYPE_GUID)) {
            out->number = (uint32_t)bytes[HD_PARTITION_NUMBER] |
                          (uint32_t)bytes[HD_PARTITION_NUMBER + 1] << 8 |
                          (uint32_t)bytes[HD_PARTITION_NUMBER + 2] << 16 |
                          (uint32_t)bytes[HD_PARTITION_NUMBER + 3] << 24;
            efi_bs->CopyMem(out->signature, (void *)(bytes + HD_SIGNATURE), 16);
            out->signature_type = bytes[HD_SIGNATURE_TYPE];
            found = true;
        }
    }
    return found;
}

/* The FAT volume serial from the ESP's boot sector (FAT32 or FAT12/16 layout). */
static bool fat_serial(const struct efi_esp *esp, uint32_t *serial)
{
    uint8_t boot[512];
    unsigned at;

    if (esp->disk_io->ReadDisk(esp->disk_io, esp->media_id, 0, sizeof boot, boot) !=
        EFI_SUCCESS || boot[510] != 0x55 || boot[511] != 0xaa)
        return false;
    at = boot[22] == 0 && boot[23] == 0 ? 66 : 38;      /* BPB_FATSz16 0: FAT32 */
    if (boot[at] != 0x29)
        return false;
    *serial = (uint32_t)boot[at + 1] | (uint32_t)boot[at + 2] << 8 |
              (uint32_t)boot[at + 3] << 16 | (uint32_t)boot[at + 4] << 24;
    return true;
}

static void put_identity(uint8_t *r, const struct vhdx_info *info, uint64_t file_size)
{
    put32(r + VHDX_HANDOFF_OFF_SECTOR_SIZE, info->logical_sector_size);
    put64(r + VHDX_HANDOFF_OFF_VIRTUAL_SIZE, info->virtual_size);
    put32(r + VHDX_HANDOFF_OFF_BLOCK_SIZE, info->block_size);
    efi_bs->CopyMem(r + VHDX_HANDOFF_OFF_DISK_ID, (void *)info->virtual_disk_id.bytes, 16);
    efi_bs->CopyMem(r + VHDX_HANDOFF_OFF_FILE_WRITE, (void *)info->file_write_guid.bytes, 16);
    efi_bs->CopyMem(r + VHDX_HANDOFF_OFF_DATA_WRITE, (void *)info->data_write_guid.bytes, 16);
    efi_bs->CopyMem(r + VHDX_HANDOFF_OFF_LOG_GUID, (void *)info->log_guid.bytes, 16);
    put64(r + VHDX_HANDOFF_OFF_FILE_SIZE, file_size);
}

static void seal(struct handoff *p)
{
    put32(p->record + VHDX_HANDOFF_OFF_CRC, 0);
    put32(p->record + VHDX_HANDOFF_OFF_CRC, vhdx_crc32c(0, p->record, p->size));
}

static EFI_STATUS write_variable(struct handoff *p)
{
    return efi_systab->RuntimeServices->SetVariable(p->name, &handoff_guid, ATTRIBUTES,
                                                    p->size, p->record);
}

static bool same_bytes(const uint8_t *a, const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

/*
 * The disk's WriteBlocks, wrapped until its first write has renewed the header's write
 * GUIDs: then the record gets them (they stay until the close) and the wrapper goes.
 */
static EFI_STATUS EFIAPI write_and_follow(EFI_BLOCK_IO_PROTOCOL *this, UINT32 media_id,
                                          EFI_LBA lba, UINTN size, VOID *buffer)
{
    struct mounted_disk *disk = container_of(this, struct mounted_disk, block_io);
    struct handoff *p = disk->handoff;
    struct vhdx_info now;
    EFI_STATUS status;

    if (!p || !p->write_blocks)
        return EFI_DEVICE_ERROR;            /* not reached: unwrapped before withdrawal */
    status = p->write_blocks(this, media_id, lba, size, buffer);
    if (!disk->vhdx)
        return status;
    vhdx_get_info(disk->vhdx, &now);
    if (same_bytes(now.data_write_guid.bytes, p->record + VHDX_HANDOFF_OFF_DATA_WRITE, 16) &&
        same_bytes(now.file_write_guid.bytes, p->record + VHDX_HANDOFF_OFF_FILE_WRITE, 16))
        return status;
    put_identity(p->record, &now, disk->file.size);
    seal(p);
    if (write_variable(p) != EFI_SUCCESS && disk->verbose)
        con_print("vhdx: %s: cannot update the hand-off variable\n", disk->path);
    this->WriteBlocks = p->write_blocks;
    p->write_blocks = NULL;
    return status;
}

/* L"VhdxDisk<index>" */
static void variable_name(CHAR16 *name, unsigned index)
{
    const char *prefix = VHDX_HANDOFF_NAME;
    size_t n = 0;

    while (*prefix)
        name[n++] = (CHAR16)*prefix++;
    if (index >= 10)
        name[n++] = (CHAR16)('0' + index / 10);
    name[n++] = (CHAR16)('0' + index % 10);
    name[n] = 0;
}

/* The first index with no variable yet (another driver instance may hold some). */
static bool free_name(struct handoff *p)
{
    for (unsigned i = 0; i < VHDX_HANDOFF_MAX_DISKS; i++) {
        UINTN size = 0;
        UINT32 attributes;
        EFI_STATUS status;

        variable_name(p->name, i);
        status = efi_systab->RuntimeServices->GetVariable(p->name, &handoff_guid,
                                                          &attributes, &size, NULL);
        if (status == EFI_NOT_FOUND) {
            p->index = i;
            return true;
        }
    }
    return false;
}

/*
 * The parent entries of a chain after the child's path (version 2): each parent's
 * identity as it was opened (read-only: it does not change) and the path the platform
 * mapped it at.  The record's size, or 0 when the chain does not fit.
 */
static size_t put_parents(uint8_t *r, size_t at, const struct mounted_disk *disk,
                          unsigned *count)
{
    const struct vhdx_disk *level = disk->vhdx;
    const struct efi_esp_file *file = disk->file.parents;

    *count = 0;
    for (; (level = vhdx_parent(level)) && file; file = file->next_parent) {
        size_t length = str_length(file->name);
        uint8_t *e = r + at;
        struct vhdx_info info;

        if (*count == VHDX_HANDOFF_MAX_PARENTS || length > VHDX_HANDOFF_PATH_MAX)
            return 0;
        vhdx_get_info(level, &info);
        efi_bs->CopyMem(e + VHDX_HANDOFF_PARENT_FILE_WRITE,
                        (void *)info.file_write_guid.bytes, 16);
        efi_bs->CopyMem(e + VHDX_HANDOFF_PARENT_DATA_WRITE,
                        (void *)info.data_write_guid.bytes, 16);
        efi_bs->CopyMem(e + VHDX_HANDOFF_PARENT_DISK_ID, (void *)info.virtual_disk_id.bytes,
                        16);
        put64(e + VHDX_HANDOFF_PARENT_FILE_SIZE, info.file_size);
        put16(e + VHDX_HANDOFF_PARENT_PATH_LENGTH, (uint16_t)length);
        efi_bs->CopyMem(e + VHDX_HANDOFF_PARENT_FIXED_SIZE, (void *)file->name, length);
        at += VHDX_HANDOFF_PARENT_FIXED_SIZE + length;
        ++*count;
    }
    return at;
}

void handoff_publish(const struct disk_set *set, struct mounted_disk *disk)
{
    struct handoff *p = NULL;
    struct esp_partition partition;
    const char *why = NULL;
    uint32_t serial, flags = 0;
    size_t path_length = str_length(disk->path);
    unsigned parents = 0;
    uint8_t *r;
    EFI_STATUS status;

    if (disk->handoff)
        return;                             /* published already */
    p = efi_allocate_zero(sizeof *p);
    if (!p)
        why = "out of memory";
    else if (path_length > VHDX_HANDOFF_PATH_MAX)
        why = "the path is too long";
    else if (!esp_partition(set->esp.device_path, &partition))
        why = "the ESP is not a GPT or MBR partition";
    else if (!fat_serial(&set->esp, &serial))
        why = "the ESP's boot sector has no FAT volume serial";
    else if (!free_name(p))
        why = "every variable name is taken";
    else if (!(p->size = put_parents(p->record, VHDX_HANDOFF_FIXED_SIZE + path_length, disk,
                                     &parents)))
        why = "its chain of parents is too deep or their paths too long";
    if (why) {
        if (disk->verbose)
            con_print("vhdx: %s: no hand-off to the OS: %s\n", disk->path, why);
        efi_free(p);
        return;
    }
    r = p->record;
    efi_bs->CopyMem(r, VHDX_HANDOFF_MAGIC, 8);
    put16(r + VHDX_HANDOFF_OFF_VERSION, parents ? VHDX_HANDOFF_VERSION_CHAIN
                                                : VHDX_HANDOFF_VERSION);
    put16(r + VHDX_HANDOFF_OFF_SIZE, (uint16_t)p->size);
    if (!disk->writable)
        flags |= VHDX_HANDOFF_READ_ONLY;
    if (partition.signature_type == SIGNATURE_TYPE_MBR)
        flags |= VHDX_HANDOFF_MBR;
    put32(r + VHDX_HANDOFF_OFF_FLAGS, flags);
    put32(r + VHDX_HANDOFF_OFF_PARTITION, partition.number);
    efi_bs->CopyMem(r + VHDX_HANDOFF_OFF_PARTITION_ID, partition.signature,
                    partition.signature_type == SIGNATURE_TYPE_MBR ? 4 : 16);
    put32(r + VHDX_HANDOFF_OFF_FAT_SERIAL, serial);
    put_identity(r, &disk->info, disk->file.size);
    put16(r + VHDX_HANDOFF_OFF_PATH_LENGTH, (uint16_t)path_length);
    put16(r + VHDX_HANDOFF_OFF_PARENTS, (uint16_t)parents);
    efi_bs->CopyMem(r + VHDX_HANDOFF_FIXED_SIZE, (void *)disk->path, path_length);
    seal(p);
    status = write_variable(p);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: %s: cannot publish the hand-off variable for the OS: %s\n",
                  disk->path, efi_status_text(status));
        efi_free(p);
        return;
    }
    disk->handoff = p;
    if (disk->writable) {
        p->write_blocks = disk->block_io.WriteBlocks;
        disk->block_io.WriteBlocks = write_and_follow;
    }
    if (disk->verbose)
        con_print("vhdx: %s: handed to the OS as EFI variable %s%u\n", disk->path,
                  VHDX_HANDOFF_NAME, p->index);
}

void handoff_closing(const struct mounted_disk *disk)
{
    if (disk->handoff && disk->vhdx)
        vhdx_get_info(disk->vhdx, &disk->handoff->final);
}

/*
 * After a clean close the header has an empty log and the write GUIDs of the session:
 * final.  A failed close leaves the record as it was at mount (not CLOSED): the file is
 * consistent through its log, and the OS checks what the record can still vouch for.
 */
void handoff_closed(const struct mounted_disk *disk, bool clean)
{
    struct handoff *p = disk->handoff;
    uint8_t *r;

    if (!p || !clean)
        return;
    r = p->record;
    efi_bs->SetMem(p->final.log_guid.bytes, 16, 0);
    put_identity(r, &p->final, disk->file.size);
    r[VHDX_HANDOFF_OFF_FLAGS] |= VHDX_HANDOFF_CLOSED;
    seal(p);
    write_variable(p);
}

void handoff_withdraw(struct mounted_disk *disk)
{
    struct handoff *p = disk->handoff;

    if (!p)
        return;
    if (p->write_blocks)
        disk->block_io.WriteBlocks = p->write_blocks;
    p->size = 0;
    write_variable(p);          /* size 0 deletes the variable */
    efi_free(p);
    disk->handoff = NULL;
}

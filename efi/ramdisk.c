/*
 * ramdisk.c - stage 4 of a `ram` mount (mount.h): the virtual disk copied into memory
 * and published as a RAM disk, which any OS with NVDIMM support finds through the ACPI
 * NFIT (Linux: /dev/pmem0, modules nfit, libnvdimm, nd_pmem), with nothing of ours
 * inside the image.
 *
 *   1. memory: the largest free region of the memory map must hold the whole virtual
 *      disk, else the mount is refused with the figures; the pages are of type
 *      EfiReservedMemoryType, which the OS leaves alone and the NFIT describes;
 *   2. copy: only the runs vhdx_map calls data are read (a dirty log was replayed in
 *      memory by the read-only open), the rest is zero-filled; a progress line is
 *      updated in place; then the image is closed and unmapped: the file was only read;
 *   3. publish: with the firmware's EFI_RAM_DISK_PROTOCOL (UEFI 2.10 section 13.16) and
 *      the ACPI SDT protocol it needs to publish the NFIT, Register the memory as a
 *      virtual disk below the disk's device path and put our registry tag on the handle
 *      the firmware made; without them (or with `own_nfit`, or 4096-byte sectors, which
 *      the firmware's driver cannot present: it has 512-byte blocks), our own Block I/O
 *      over the memory (blockio.c) and our own NFIT and SSDT (acpi.c).
 *
 * Everything written to the disk from then on lives in memory and is gone at power-off.
 */
#include "console.h"
#include "mount.h"

#define RAM_DISK_PROTOCOL_GUID \
    { 0xab38a0df, 0x6873, 0x44a9, { 0x87, 0xe6, 0xd4, 0xeb, 0x56, 0x14, 0x84, 0x49 } }
#define ACPI_SDT_PROTOCOL_GUID \
    { 0xeb97088e, 0xcfdf, 0x49c6, { 0xbe, 0x4b, 0xd9, 0x06, 0xa5, 0xb2, 0x0e, 0x86 } }
/* The RAM disk type of a volatile virtual disk (UEFI 2.10 section 10.3.5.10). */
#define VIRTUAL_DISK_GUID \
    { 0x77ab535a, 0x45fc, 0x624b, { 0x55, 0x60, 0xf7, 0xb2, 0x81, 0xd1, 0xf9, 0x6e } }
#define MEDIA_RAM_DISK_DP 0x09
#define RAM_DISK_NODE_SIZE 38
/* The firmware's RAM disk driver presents 512-byte blocks (EDK II RamDiskDxe). */
#define FIRMWARE_BLOCK_SIZE 512

/* Read in pieces of this size, so the progress line moves. */
#define COPY_PIECE (1u << 20)
#define PROGRESS_MS 500

struct ram_disk_protocol {
    EFI_STATUS (EFIAPI *Register)(UINT64 base, UINT64 size, EFI_GUID *type,
                                  EFI_DEVICE_PATH *parent, EFI_DEVICE_PATH **path);
    EFI_STATUS (EFIAPI *Unregister)(EFI_DEVICE_PATH *path);
};

static EFI_GUID ram_disk_protocol_guid = RAM_DISK_PROTOCOL_GUID;
static EFI_GUID acpi_sdt_protocol_guid = ACPI_SDT_PROTOCOL_GUID;
static EFI_GUID virtual_disk_guid = VIRTUAL_DISK_GUID;

/* --- 1. memory ------------------------------------------------------------------------- */

/* Bytes of the largest free (EfiConventionalMemory) region of the memory map. */
static uint64_t largest_free_region(void)
{
    EFI_MEMORY_DESCRIPTOR *map = NULL;
    UINTN size = 0, key, descriptor_size;
    UINT32 version;
    uint64_t largest = 0;
    EFI_STATUS status;

    status = efi_bs->GetMemoryMap(&size, NULL, &key, &descriptor_size, &version);
    while (status == EFI_BUFFER_TOO_SMALL) {
        efi_free(map);
        size += 4 * sizeof *map;        /* the pool allocation may add descriptors */
        map = efi_allocate(size);
        if (!map)
            return 0;
        status = efi_bs->GetMemoryMap(&size, map, &key, &descriptor_size, &version);
    }
    for (UINTN at = 0; status == EFI_SUCCESS && at + descriptor_size <= size;
         at += descriptor_size) {
        const EFI_MEMORY_DESCRIPTOR *d = (const EFI_MEMORY_DESCRIPTOR *)((uint8_t *)map + at);

        if (d->Type == EfiConventionalMemory && d->NumberOfPages * EFI_PAGE_SIZE > largest)
            largest = d->NumberOfPages * EFI_PAGE_SIZE;
    }
    efi_free(map);
    return largest;
}

static EFI_STATUS allocate_memory(struct mounted_disk *disk)
{
    struct ram_disk *ram = &disk->ram_disk;
    uint64_t largest = largest_free_region();
    char need_text[24], free_text[24];
    EFI_PHYSICAL_ADDRESS base = 0;
    EFI_STATUS status;

    ram->size = disk->info.virtual_size;
    con_size_text(need_text, sizeof need_text, ram->size);
    con_size_text(free_text, sizeof free_text, largest);
    if (ram->size > largest) {
        con_print("vhdx: %s: a RAM disk needs %s of memory in one piece, and the largest "
                  "free region is %s: not mounted\n", disk->path, need_text, free_text);
        return EFI_OUT_OF_RESOURCES;
    }
    ram->pages = (UINTN)((ram->size + EFI_PAGE_SIZE - 1) / EFI_PAGE_SIZE);
    status = efi_bs->AllocatePages(AllocateAnyPages, EfiReservedMemoryType, ram->pages,
                                   &base);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: %s: cannot reserve %s of memory for a RAM disk (%s; the largest "
                  "free region is %s): not mounted\n", disk->path, need_text,
                  efi_status_text(status), free_text);
        return status;
    }
    ram->base = base;
    return EFI_SUCCESS;
}

static void free_memory(struct ram_disk *ram)
{
    if (ram->base)
        efi_bs->FreePages(ram->base, ram->pages);
    ram->base = 0;
}

/* --- 2. copy --------------------------------------------------------------------------- */

struct progress {
    const char *path;
    uint64_t total, done, read;         /* bytes: the disk, copied so far, read from data */
    uint64_t start, last, per_ms;       /* ticks */
    bool shown;
};

/* MiB/s of data read so far, to one decimal, as text. */
static void rate_text(const struct progress *p, uint64_t now, char *out, size_t size)
{
    uint64_t ms = (now - p->start) / p->per_ms;
    uint64_t tenths = ms ? p->read * 10 * 1000 / ms >> 20 : 0;

    con_format(out, size, "%llu.%llu MiB/s", (unsigned long long)(tenths / 10),
               (unsigned long long)(tenths % 10));
}

static void show_progress(struct progress *p, bool last)
{
    uint64_t now = efi_ticks();
    char rate[32], done[24], total[24];

    if (!last && now - p->last < PROGRESS_MS * p->per_ms)
        return;
    p->last = now;
    rate_text(p, now, rate, sizeof rate);
    con_size_text(done, sizeof done, p->done);
    con_size_text(total, sizeof total, p->total);
    con_print("\rvhdx: %s: copying into memory: %u%% (%s of %s), %s   ", p->path,
              (unsigned)(p->total ? p->done * 100 / p->total : 100), done, total, rate);
    p->shown = true;
}

static EFI_STATUS copy_disk(struct mounted_disk *disk)
{
    const struct vhdx_info *info = &disk->info;
    uint8_t *memory = (uint8_t *)(uintptr_t)disk->ram_disk.base;
    uint32_t sector = info->logical_sector_size;
    uint64_t sectors = info->virtual_size / sector, at = 0;
    struct progress p = { disk->path, info->virtual_size, 0, 0, efi_ticks(), 0,
                          efi_ticks_per_ms(), false };
    char rate[32], total[24], read[24], reason[200];
    uint64_t ms;
    int rc = VHDX_OK;

    show_progress(&p, true);            /* at once: the first update may be a while */
    while (at < sectors && rc == VHDX_OK) {
        uint64_t run;
        unsigned status;

        rc = vhdx_map(disk->vhdx, at, sectors - at, &run, &status);
        if (rc != VHDX_OK)
            break;
        if (run > COPY_PIECE / sector)
            run = COPY_PIECE / sector;
        if (status == VHDX_MAP_DATA) {
            rc = vhdx_read(disk->vhdx, at, run, memory + at * sector);
            p.read += run * sector;
        } else {
            efi_bs->SetMem(memory + at * sector, run * sector, 0);
        }
        at += run;
        p.done = at * sector;
        show_progress(&p, false);
    }
    if (p.shown)
        con_print("\n");
    if (rc != VHDX_OK) {
        vhdx_describe(vhdx_last_diag(disk->vhdx), reason, sizeof reason);
        con_print("vhdx: %s: copying into memory failed at sector %llu: %s: not mounted\n",
                  disk->path, (unsigned long long)at, reason);
        return EFI_DEVICE_ERROR;
    }
    ms = (efi_ticks() - p.start) / p.per_ms;
    rate_text(&p, efi_ticks(), rate, sizeof rate);
    con_size_text(total, sizeof total, p.total);
    con_size_text(read, sizeof read, p.read);
    con_print("vhdx: %s: copied into memory: %s, %s of it read from the file (the rest is "
              "zeros) in %llu.%03llu s, %s\n", disk->path, total, read,
              (unsigned long long)(ms / 1000), (unsigned long long)(ms % 1000), rate);
    return EFI_SUCCESS;
}

/* --- 3. publish ------------------------------------------------------------------------ */

/* disk->device_path followed by a RamDisk() node for the memory (pool memory). */
static EFI_DEVICE_PATH *ram_device_path(const struct mounted_disk *disk)
{
    const struct ram_disk *ram = &disk->ram_disk;
    size_t parent = efi_device_path_size(disk->device_path) - END_DEVICE_PATH_LENGTH;
    uint8_t *path = efi_allocate_zero(parent + RAM_DISK_NODE_SIZE + END_DEVICE_PATH_LENGTH);
    uint8_t *node, *end;
    uint64_t last = ram->base + ram->size - 1;

    if (!path)
        return NULL;
    efi_bs->CopyMem(path, disk->device_path, parent);
    node = path + parent;
    node[0] = MEDIA_DEVICE_PATH;
    node[1] = MEDIA_RAM_DISK_DP;
    node[2] = RAM_DISK_NODE_SIZE;
    for (unsigned i = 0; i < 8; i++) {
        node[4 + i] = (uint8_t)(ram->base >> (8 * i));
        node[12 + i] = (uint8_t)(last >> (8 * i));
    }
    efi_bs->CopyMem(node + 20, &virtual_disk_guid, sizeof virtual_disk_guid);
    /* Instance 0 (bytes 36-37). */
    end = node + RAM_DISK_NODE_SIZE;
    end[0] = END_DEVICE_PATH_TYPE;
    end[1] = END_ENTIRE_DEVICE_PATH_SUBTYPE;
    end[2] = END_DEVICE_PATH_LENGTH;
    return (EFI_DEVICE_PATH *)path;
}

/* The firmware's RAM disk driver, when it will publish the NFIT; else NULL and why. */
static struct ram_disk_protocol *firmware_driver(const struct mounted_disk *disk,
                                                 const char **why)
{
    struct ram_disk_protocol *driver;
    void *sdt;

    if (disk->own_tables)
        *why = "own_nfit";
    else if (disk->info.logical_sector_size != FIRMWARE_BLOCK_SIZE)
        *why = "the firmware's RAM disk driver has 512-byte blocks";
    else if (efi_bs->LocateProtocol(&ram_disk_protocol_guid, NULL, (void **)&driver) !=
             EFI_SUCCESS)
        *why = "the firmware has no RAM disk driver";
    else if (efi_bs->LocateProtocol(&acpi_sdt_protocol_guid, NULL, &sdt) != EFI_SUCCESS)
        *why = "the firmware has no ACPI SDT protocol, which its RAM disk driver needs to "
               "publish the NFIT";
    else
        return driver;
    return NULL;
}

static EFI_STATUS publish_with_firmware(struct disk_set *set, struct mounted_disk *disk,
                                        struct ram_disk_protocol *driver)
{
    struct ram_disk *ram = &disk->ram_disk;
    EFI_DEVICE_PATH *remaining;
    EFI_STATUS status;

    status = driver->Register(ram->base, ram->size, &virtual_disk_guid, disk->device_path,
                              &ram->firmware_path);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: %s: the firmware's RAM disk driver refused the disk: %s\n",
                  disk->path, efi_status_text(status));
        goto err_register;
    }
    remaining = ram->firmware_path;
    status = efi_bs->LocateDevicePath(&efi_block_io_guid, &remaining, &ram->firmware_handle);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: %s: the firmware's RAM disk has no Block I/O: %s\n", disk->path,
                  efi_status_text(status));
        goto err_locate;
    }
    registry_tag(disk, &set->esp);
    status = efi_bs->InstallProtocolInterface(&ram->firmware_handle, &disk_tag_guid,
                                              EFI_NATIVE_INTERFACE, &disk->tag);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: %s: cannot tag the RAM disk: %s\n", disk->path,
                  efi_status_text(status));
        goto err_tag;
    }
    efi_bs->ConnectController(ram->firmware_handle, NULL, NULL, TRUE);
    con_print("vhdx: %s: RAM disk of the firmware's driver at 0x%llx, %llu bytes, with an "
              "ACPI NFIT for the OS; what is written to it is lost at power-off\n",
              disk->path, (unsigned long long)ram->base, (unsigned long long)ram->size);
    return EFI_SUCCESS;

err_tag:
err_locate:
    driver->Unregister(ram->firmware_path);
    efi_free(ram->firmware_path);
    ram->firmware_path = NULL;
    ram->firmware_handle = NULL;
err_register:
    return status;
}

static EFI_STATUS publish_own(struct disk_set *set, struct mounted_disk *disk,
                              const char *why_own)
{
    struct ram_disk *ram = &disk->ram_disk;
    EFI_DEVICE_PATH *path = ram_device_path(disk);
    const char *why;
    EFI_STATUS status;

    if (!path) {
        con_print("vhdx: %s: out of memory\n", disk->path);
        return EFI_OUT_OF_RESOURCES;
    }
    efi_free(disk->device_path);
    disk->device_path = path;
    ram->own = true;
    status = blockio_install(disk, &set->esp);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: %s: cannot install Block I/O: %s\n", disk->path,
                  efi_status_text(status));
        ram->own = false;
        return status;
    }
    status = acpi_publish_ram_disk(ram, &why);
    if (status == EFI_SUCCESS)
        con_print("vhdx: %s: RAM disk of our own at 0x%llx, %llu bytes (%s), with our ACPI "
                  "NFIT and SSDT for the OS; what is written to it is lost at power-off\n",
                  disk->path, (unsigned long long)ram->base, (unsigned long long)ram->size,
                  why_own);
    else
        con_print("vhdx: %s: RAM disk of our own at 0x%llx, %llu bytes (%s); warning: no "
                  "ACPI NFIT, so the OS will not find it: %s\n", disk->path,
                  (unsigned long long)ram->base, (unsigned long long)ram->size, why_own, why);
    return EFI_SUCCESS;
}

EFI_STATUS ramdisk_publish(struct disk_set *set, struct mounted_disk *disk)
{
    struct ram_disk_protocol *driver;
    const char *why = NULL;
    EFI_STATUS status;

    status = allocate_memory(disk);
    if (status != EFI_SUCCESS)
        goto err_memory;
    status = copy_disk(disk);
    if (status != EFI_SUCCESS)
        goto err_copy;
    /* The copy is all there is now: the file was only read, and is let go. */
    close_disk(disk, false);
    efi_esp_unmap(&disk->file);
    driver = firmware_driver(disk, &why);
    status = driver ? publish_with_firmware(set, disk, driver) : publish_own(set, disk, why);
    if (status != EFI_SUCCESS)
        goto err_publish;
    return EFI_SUCCESS;

err_publish:
err_copy:
    free_memory(&disk->ram_disk);
err_memory:
    return status;
}

EFI_STATUS ramdisk_unpublish(struct mounted_disk *disk, const struct efi_esp *esp)
{
    struct ram_disk *ram = &disk->ram_disk;
    struct ram_disk_protocol *driver;
    EFI_STATUS status;

    if (ram->own) {
        status = blockio_uninstall(disk, esp);
        if (status != EFI_SUCCESS)
            return status;
        acpi_unpublish_ram_disk(ram);
    } else if (ram->firmware_handle) {
        /* The drivers above it first: that is what fails while it is in use. */
        status = efi_bs->DisconnectController(ram->firmware_handle, NULL, NULL);
        if (status != EFI_SUCCESS) {
            efi_bs->ConnectController(ram->firmware_handle, NULL, NULL, TRUE);
            return status;
        }
        efi_bs->UninstallProtocolInterface(ram->firmware_handle, &disk_tag_guid, &disk->tag);
        status = efi_bs->LocateProtocol(&ram_disk_protocol_guid, NULL, (void **)&driver);
        if (status == EFI_SUCCESS)
            status = driver->Unregister(ram->firmware_path);
        if (status != EFI_SUCCESS) {
            efi_bs->InstallProtocolInterface(&ram->firmware_handle, &disk_tag_guid,
                                             EFI_NATIVE_INTERFACE, &disk->tag);
            efi_bs->ConnectController(ram->firmware_handle, NULL, NULL, TRUE);
            return status;
        }
        efi_free(ram->firmware_path);
        ram->firmware_path = NULL;
        ram->firmware_handle = NULL;
    }
    free_memory(ram);
    return EFI_SUCCESS;
}

/*
 * driver.c - vhdx.efi: mount .vhdx files of the EFI System Partition as disks.
 *
 * A boot-service driver without a driver binding: the entry point mounts every disk of
 * the configuration (disk.c), watches for the platform going away (shutdown.c: reset
 * and ExitBootServices close the images) and stays resident.  `unload` (the shell's, or
 * UnloadImage) disconnects and uninstalls every disk, closes the images and frees
 * everything before the image goes; while a disk is still in use it refuses and the
 * driver stays.
 */
#include "console.h"
#include "disk.h"

#define VHDX_EFI_VERSION "0.1.0"

/* UnloadImage passes only the image handle: one driver instance per image. */
static struct disk_set *the_disks;

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab);

static EFI_STATUS EFIAPI driver_unload(EFI_HANDLE image)
{
    struct disk_set *disks = the_disks;
    EFI_STATUS status;

    (void)image;
    status = disk_set_unmount(disks);
    if (status != EFI_SUCCESS)
        return status;      /* still in use: stay loaded, the rest keeps working */
    disk_set_unwatch(disks);
    the_disks = NULL;
    efi_free(disks);
    con_print("vhdx: unloaded\n");
    return EFI_SUCCESS;
}

/* Entered from gnu-efi's crt0 with the System V convention: not EFIAPI. */
EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
    EFI_LOADED_IMAGE_PROTOCOL *loaded;
    struct disk_set *disks;
    struct config *config;
    EFI_STATUS status;

    efi_system_init(image, systab);
    con_print("vhdx.efi " VHDX_EFI_VERSION " (core " VHDX_CORE_VERSION
              "): VHDX disks from the EFI System Partition\n");
    status = efi_bs->HandleProtocol(image, &efi_loaded_image_guid, (void **)&loaded);
    if (status != EFI_SUCCESS)
        goto err_loaded;
    disks = efi_allocate(sizeof *disks);
    config = efi_allocate(sizeof *config);
    if (!disks || !config) {
        status = EFI_OUT_OF_RESOURCES;
        goto err_alloc;
    }
    status = disk_set_init(disks, image);
    if (status != EFI_SUCCESS)
        goto err_init;
    status = disk_set_configure(disks, config, loaded->LoadOptions,
                                loaded->LoadOptionsSize);
    if (status != EFI_SUCCESS)
        goto err_configure;
    status = disk_set_watch(disks);
    if (status != EFI_SUCCESS)
        goto err_watch;
    the_disks = disks;
    if (disk_set_mount(disks, config) == 0) {
        con_print("vhdx: no disk mounted\n");
        status = EFI_NOT_FOUND;
        goto err_mount;
    }
    efi_free(config);
    loaded->Unload = driver_unload;
    return EFI_SUCCESS;

err_mount:
    the_disks = NULL;
    disk_set_unwatch(disks);
err_watch:
err_configure:
err_init:
err_alloc:
    efi_free(config);
    efi_free(disks);
err_loaded:
    return status;
}

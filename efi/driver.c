/*
 * driver.c - vhdx.efi: mount .vhdx files of the EFI System Partition as disks.
 *
 * A boot-service driver without a driver binding: the entry point mounts every disk of
 * the configuration (mount.h), watches for the platform going away (shutdown.c: reset
 * and ExitBootServices close the images) and stays resident.  `unload` (the shell's, or
 * UnloadImage) disconnects and uninstalls every disk, closes the images and frees
 * everything before the image goes; while a disk is still in use it refuses and the
 * driver stays.
 *
 * The image handle also carries a component name and a driver binding, only so that
 * the shell's `drivers` lists it (it lists handles with a driver binding, by their
 * component name) with the handle number `unload` needs.  The binding binds nothing:
 * its Supported says no to every controller, since the disks come from the
 * configuration, not from controllers the firmware offers.
 */
#include "console.h"
#include "mount.h"

#define VHDX_EFI_VERSION "0.1.0"

/* UnloadImage passes only the image handle: one driver instance per image. */
static struct disk_set *the_disks;

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab);

/* --- the name `drivers` shows ------------------------------------------------------- */

static CHAR16 driver_name[] = L"VHDX disks (vhdx.efi " VHDX_EFI_VERSION ")";

/* Supported and Start: no controller is ours to bind. */
static EFI_STATUS EFIAPI binding_refuse(EFI_DRIVER_BINDING_PROTOCOL *this,
                                        EFI_HANDLE controller, EFI_DEVICE_PATH *remaining)
{
    (void)this;
    (void)controller;
    (void)remaining;
    return EFI_UNSUPPORTED;
}

static EFI_STATUS EFIAPI binding_stop(EFI_DRIVER_BINDING_PROTOCOL *this,
                                      EFI_HANDLE controller, UINTN children,
                                      EFI_HANDLE *child_handles)
{
    (void)this;
    (void)controller;
    (void)children;
    (void)child_handles;
    return EFI_UNSUPPORTED;
}

/* RFC 4646 languages: "en", "en-US", ... all get the one name. */
static EFI_STATUS EFIAPI get_driver_name(EFI_COMPONENT_NAME2_PROTOCOL *this, CHAR8 *language,
                                         CHAR16 **name)
{
    (void)this;
    if (!language || !name)
        return EFI_INVALID_PARAMETER;
    if (language[0] != 'e' || language[1] != 'n' || (language[2] && language[2] != '-'))
        return EFI_UNSUPPORTED;
    *name = driver_name;
    return EFI_SUCCESS;
}

static EFI_STATUS EFIAPI get_controller_name(EFI_COMPONENT_NAME2_PROTOCOL *this,
                                             EFI_HANDLE controller, EFI_HANDLE child,
                                             CHAR8 *language, CHAR16 **name)
{
    (void)this;
    (void)controller;
    (void)child;
    (void)language;
    (void)name;
    return EFI_UNSUPPORTED;
}

static EFI_DRIVER_BINDING_PROTOCOL driver_binding = {
    binding_refuse, binding_refuse, binding_stop, 0x10, NULL, NULL
};
static EFI_COMPONENT_NAME2_PROTOCOL component_name = {
    get_driver_name, get_controller_name, (CHAR8 *)"en"
};

/* Failing to be listed is no reason not to work: the result is only reported. */
static void name_install(EFI_HANDLE image)
{
    EFI_STATUS status;

    driver_binding.ImageHandle = image;
    driver_binding.DriverBindingHandle = image;
    status = efi_bs->InstallMultipleProtocolInterfaces(&image, &efi_driver_binding_guid,
                                                       &driver_binding,
                                                       &efi_component_name2_guid,
                                                       &component_name, NULL);
    if (status != EFI_SUCCESS)
        con_print("vhdx: cannot name the driver for the shell's `drivers`: %s\n",
                  efi_status_text(status));
}

static void name_uninstall(EFI_HANDLE image)
{
    efi_bs->UninstallMultipleProtocolInterfaces(image, &efi_driver_binding_guid,
                                                &driver_binding, &efi_component_name2_guid,
                                                &component_name, NULL);
}

/* --- load and unload ---------------------------------------------------------------- */

static EFI_STATUS EFIAPI driver_unload(EFI_HANDLE image)
{
    struct disk_set *disks = the_disks;
    EFI_STATUS status;

    status = disk_set_unmount(disks);
    if (status != EFI_SUCCESS)
        return status;      /* still in use: stay loaded, the rest keeps working */
    name_uninstall(image);
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
    name_install(image);
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

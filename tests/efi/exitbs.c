/*
 * exitbs.efi - end the boot the way an operating system loader does: ExitBootServices,
 * then power off through the runtime ResetSystem.  Tests use it to check that drivers
 * leave their disks clean when boot services end (not only at `reset`).
 */
#include "console.h"
#include "system.h"

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab);

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
    EFI_RUNTIME_SERVICES *runtime = systab->RuntimeServices;
    EFI_MEMORY_DESCRIPTOR *map = NULL;
    UINTN map_size = 0, key, descriptor_size;
    UINT32 version;
    EFI_STATUS status;

    efi_system_init(image, systab);
    con_print("exitbs: calling ExitBootServices, then powering off\n");
    /* The map changes when we allocate it, and drivers may allocate in their
     * before-exit notifications: retry with a fresh map until the key holds. */
    for (unsigned attempt = 0; attempt < 8; attempt++) {
        status = efi_bs->GetMemoryMap(&map_size, map, &key, &descriptor_size, &version);
        if (status == EFI_BUFFER_TOO_SMALL) {
            efi_free(map);
            map_size += 8 * sizeof *map + 4096;
            map = efi_allocate(map_size);
            if (!map)
                return EFI_OUT_OF_RESOURCES;
            status = efi_bs->GetMemoryMap(&map_size, map, &key, &descriptor_size,
                                          &version);
        }
        if (status != EFI_SUCCESS)
            break;
        status = efi_bs->ExitBootServices(image, key);
        if (status == EFI_SUCCESS) {
            runtime->ResetSystem(EfiResetShutdown, EFI_SUCCESS, 0, NULL);
            for (;;)
                __asm__ __volatile__("hlt");
        }
    }
    con_print("exitbs: ExitBootServices failed: %s\n", efi_status_text(status));
    return status;
}

/*
 * retloader.efi - a boot loader that returns, for testing vhdxboot.efi's way back.
 *
 * It prints the TPL it runs at (4, TPL_APPLICATION, unless a driver left it raised) and
 * the device path of the file system it was loaded from (inside a VHDX: the ESP's path,
 * the disk's VenMedia node, then the inner partition), writes \retloader.txt there
 * (so a test can check that what a loader writes is in the image once vhdxboot has
 * taken the disk away), and returns EFI_ABORTED: a failed boot option, after which the
 * boot manager tries the next one.
 */
#include "console.h"
#include "system.h"

#define NOTE_NAME L"\\retloader.txt"
#define NOTE_TEXT "written by retloader.efi through the disk inside the VHDX\r\n"

static EFI_GUID device_path_to_text_guid = EFI_DEVICE_PATH_TO_TEXT_PROTOCOL_GUID;

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab);

static void print_device_path(EFI_HANDLE device)
{
    EFI_DEVICE_PATH_TO_TEXT_PROTOCOL *to_text;
    EFI_DEVICE_PATH *path;
    CHAR16 *text;

    if (efi_bs->HandleProtocol(device, &efi_device_path_guid, (void **)&path) != EFI_SUCCESS ||
        efi_bs->LocateProtocol(&device_path_to_text_guid, NULL, (void **)&to_text) !=
        EFI_SUCCESS)
        return;
    text = to_text->ConvertDevicePathToText(path, FALSE, FALSE);
    if (!text)
        return;
    con_print("retloader: loaded from ");
    efi_systab->ConOut->OutputString(efi_systab->ConOut, text);
    con_print("\n");
    efi_free(text);
}

static EFI_STATUS write_note(EFI_HANDLE device)
{
    EFI_SIMPLE_FILE_SYSTEM_PROTOCOL *file_system;
    EFI_FILE_PROTOCOL *root, *file;
    static const char note[] = NOTE_TEXT;
    UINTN size = sizeof note - 1;
    EFI_STATUS status;

    status = efi_bs->HandleProtocol(device, &efi_simple_file_system_guid,
                                    (void **)&file_system);
    if (status != EFI_SUCCESS)
        return status;
    status = file_system->OpenVolume(file_system, &root);
    if (status != EFI_SUCCESS)
        return status;
    status = root->Open(root, &file, NOTE_NAME,
                        EFI_FILE_MODE_READ | EFI_FILE_MODE_WRITE | EFI_FILE_MODE_CREATE, 0);
    if (status == EFI_SUCCESS) {
        status = file->Write(file, &size, (void *)note);
        if (status == EFI_SUCCESS)
            status = file->Flush(file);
        file->Close(file);
    }
    root->Close(root);
    return status;
}

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
    EFI_LOADED_IMAGE_PROTOCOL *loaded;
    EFI_STATUS status;

    efi_system_init(image, systab);
    con_print("retloader: TPL %llu\n", (unsigned long long)efi_current_tpl());
    status = efi_bs->HandleProtocol(image, &efi_loaded_image_guid, (void **)&loaded);
    if (status != EFI_SUCCESS)
        return status;
    print_device_path(loaded->DeviceHandle);
    status = write_note(loaded->DeviceHandle);
    con_print("retloader: wrote \\retloader.txt: %s\n", efi_status_text(status));
    con_print("retloader: returning Aborted\n");
    return EFI_ABORTED;
}

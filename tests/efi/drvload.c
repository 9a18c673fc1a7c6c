/*
 * drvload.efi - load a driver with LoadOptions, as a Driver#### entry's optional data
 * or a boot program would pass them (the shell's `load` passes none).
 *
 *     drvload.efi DRIVER OPTIONS_FILE
 *
 * Both paths are on the file system drvload.efi was started from ('\' separated, from
 * its root).  The bytes of OPTIONS_FILE are passed unchanged, so a UTF-16 file tests
 * the UCS-2 path of a driver's option parser and a UTF-8 one the byte path.
 */
#include "console.h"
#include "system.h"

#define OPTIONS_MAX (64u * 1024u)
#define PATH_CHARS 256

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab);

/* The next blank-separated word of a UCS-2 command line, copied NUL-terminated. */
static const CHAR16 *next_word(const CHAR16 *p, CHAR16 *word, size_t size)
{
    size_t n = 0;

    while (*p == ' ' || *p == '\t')
        p++;
    while (*p && *p != ' ' && *p != '\t') {
        if (n + 1 < size)
            word[n++] = *p;
        p++;
    }
    word[n] = 0;
    return p;
}

static EFI_STATUS read_file(EFI_FILE_PROTOCOL *root, CHAR16 *path, void **data,
                            UINTN *size)
{
    EFI_FILE_PROTOCOL *file;
    EFI_STATUS status;

    status = root->Open(root, &file, path, EFI_FILE_MODE_READ, 0);
    if (status != EFI_SUCCESS)
        return status;
    *data = efi_allocate(OPTIONS_MAX);
    *size = OPTIONS_MAX;
    status = *data ? file->Read(file, size, *data) : EFI_OUT_OF_RESOURCES;
    file->Close(file);
    return status;
}

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
    EFI_LOADED_IMAGE_PROTOCOL *self, *loaded;
    EFI_SIMPLE_FILE_SYSTEM_PROTOCOL *file_system;
    EFI_FILE_PROTOCOL *root;
    CHAR16 program[PATH_CHARS], driver_path[PATH_CHARS], options_path[PATH_CHARS];
    const CHAR16 *args;
    EFI_DEVICE_PATH *device_path;
    EFI_HANDLE driver = NULL;
    void *options = NULL;
    UINTN options_size = 0;
    EFI_STATUS status;

    efi_system_init(image, systab);
    status = efi_bs->HandleProtocol(image, &efi_loaded_image_guid, (void **)&self);
    if (status != EFI_SUCCESS)
        return status;
    args = self->LoadOptions ? (const CHAR16 *)self->LoadOptions : (const CHAR16 *)L"";
    args = next_word(args, program, PATH_CHARS);
    args = next_word(args, driver_path, PATH_CHARS);
    next_word(args, options_path, PATH_CHARS);
    if (!driver_path[0] || !options_path[0]) {
        con_print("usage: drvload.efi DRIVER OPTIONS_FILE\n");
        return EFI_INVALID_PARAMETER;
    }
    status = efi_bs->HandleProtocol(self->DeviceHandle, &efi_simple_file_system_guid,
                                    (void **)&file_system);
    if (status == EFI_SUCCESS)
        status = file_system->OpenVolume(file_system, &root);
    if (status != EFI_SUCCESS) {
        con_print("drvload: no file system: %s\n", efi_status_text(status));
        return status;
    }
    status = read_file(root, options_path, &options, &options_size);
    root->Close(root);
    if (status != EFI_SUCCESS) {
        con_print("drvload: cannot read the options file: %s\n", efi_status_text(status));
        return status;
    }
    device_path = efi_file_device_path(self->DeviceHandle, driver_path);
    if (!device_path)
        return EFI_OUT_OF_RESOURCES;
    status = efi_bs->LoadImage(FALSE, image, device_path, NULL, 0, &driver);
    if (status != EFI_SUCCESS) {
        con_print("drvload: cannot load the driver: %s\n", efi_status_text(status));
        return status;
    }
    efi_bs->HandleProtocol(driver, &efi_loaded_image_guid, (void **)&loaded);
    /* The pool buffer outlives us: the driver may keep looking at its options. */
    loaded->LoadOptions = options;
    loaded->LoadOptionsSize = (UINT32)options_size;
    con_print("drvload: starting the driver with %llu bytes of options\n",
              (unsigned long long)options_size);
    status = efi_bs->StartImage(driver, NULL, NULL);
    con_print("drvload: the driver returned: %s\n", efi_status_text(status));
    return status;
}

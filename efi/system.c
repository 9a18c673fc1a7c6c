/*
 * system.c - the firmware's tables, pool memory and GUIDs for every image we build.
 */
#include "system.h"

EFI_HANDLE efi_image_handle;
EFI_SYSTEM_TABLE *efi_systab;
EFI_BOOT_SERVICES *efi_bs;

EFI_GUID efi_block_io_guid = EFI_BLOCK_IO_PROTOCOL_GUID;
EFI_GUID efi_disk_io_guid = EFI_DISK_IO_PROTOCOL_GUID;
EFI_GUID efi_device_path_guid = EFI_DEVICE_PATH_PROTOCOL_GUID;
EFI_GUID efi_loaded_image_guid = EFI_LOADED_IMAGE_PROTOCOL_GUID;
EFI_GUID efi_simple_file_system_guid = EFI_SIMPLE_FILE_SYSTEM_PROTOCOL_GUID;
EFI_GUID efi_file_info_guid = EFI_FILE_INFO_ID;
EFI_GUID efi_file_system_info_guid = EFI_FILE_SYSTEM_INFO_ID;
EFI_GUID efi_rng_guid = EFI_RNG_PROTOCOL_GUID;
/* UEFI 2.7 section 8.5.1, EFI_RESET_NOTIFICATION_PROTOCOL (not in gnu-efi 3.0.15). */
EFI_GUID efi_reset_notification_guid =
    { 0x9da34ae0, 0xeaf9, 0x4bbf, { 0x8e, 0xc3, 0xfd, 0x60, 0x22, 0x6c, 0x44, 0xbe } };
/* UEFI 2.8 section 7.1, EFI_EVENT_GROUP_BEFORE_EXIT_BOOT_SERVICES. */
EFI_GUID efi_before_exit_boot_services_guid =
    { 0x8be0e274, 0x3970, 0x4b44, { 0x80, 0xc5, 0x1a, 0xb9, 0x50, 0x2f, 0x3b, 0xfc } };
EFI_GUID efi_driver_binding_guid = EFI_DRIVER_BINDING_PROTOCOL_GUID;
EFI_GUID efi_component_name2_guid = EFI_COMPONENT_NAME2_PROTOCOL_GUID;

void efi_system_init(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
    efi_image_handle = image;
    efi_systab = systab;
    efi_bs = systab->BootServices;
}

void *efi_allocate(size_t size)
{
    void *memory = NULL;

    if (efi_bs->AllocatePool(EfiBootServicesData, size ? size : 1, &memory) != EFI_SUCCESS)
        return NULL;
    return memory;
}

void *efi_allocate_zero(size_t size)
{
    void *memory = efi_allocate(size);

    if (memory)
        efi_bs->SetMem(memory, size, 0);
    return memory;
}

void efi_free(void *memory)
{
    if (memory)
        efi_bs->FreePool(memory);
}

uint64_t efi_ticks(void)
{
    uint32_t low, high;

    __asm__ __volatile__("rdtsc" : "=a"(low), "=d"(high));
    return ((uint64_t)high << 32) | low;
}

uint64_t efi_ticks_per_ms(void)
{
    static uint64_t per_ms;

    if (!per_ms) {
        uint64_t start = efi_ticks();

        efi_bs->Stall(100000);
        per_ms = (efi_ticks() - start) / 100;
        if (!per_ms)
            per_ms = 1;
    }
    return per_ms;
}

EFI_TPL efi_current_tpl(void)
{
    EFI_TPL tpl = efi_bs->RaiseTPL(TPL_HIGH_LEVEL);

    efi_bs->RestoreTPL(tpl);
    return tpl;
}

size_t efi_device_path_size(const EFI_DEVICE_PATH *path)
{
    const EFI_DEVICE_PATH *node = path;

    while (!(node->Type == END_DEVICE_PATH_TYPE &&
             node->SubType == END_ENTIRE_DEVICE_PATH_SUBTYPE)) {
        size_t length = (size_t)node->Length[0] | ((size_t)node->Length[1] << 8);

        if (length < sizeof *node)
            break;              /* malformed: treat as the end rather than loop forever */
        node = (const EFI_DEVICE_PATH *)((const uint8_t *)node + length);
    }
    return (size_t)((const uint8_t *)node - (const uint8_t *)path) + sizeof *node;
}

void efi_path_text(const EFI_DEVICE_PATH *path, char *out, size_t size)
{
    size_t used = 0;

    for (const EFI_DEVICE_PATH *node = path; node && !IsDevicePathEnd(node);
         node = NextDevicePathNode(node)) {
        size_t length = DevicePathNodeLength(node);
        const uint8_t *name = (const uint8_t *)node + END_DEVICE_PATH_LENGTH;

        if (length < END_DEVICE_PATH_LENGTH)
            break;
        if (DevicePathType(node) != MEDIA_DEVICE_PATH ||
            DevicePathSubType(node) != MEDIA_FILEPATH_DP)
            continue;
        /* Consecutive file path nodes concatenate; the name may be unaligned. */
        for (size_t i = 0; i + 1 < length - END_DEVICE_PATH_LENGTH; i += 2) {
            uint16_t c = (uint16_t)(name[i] | (name[i + 1] << 8));

            if (c == 0)
                break;
            if (i == 0 && used > 0 && out[used - 1] != '\\' && c != '\\' && used + 1 < size)
                out[used++] = '\\';
            if (c < 0x80 && used + 1 < size) {
                out[used++] = (char)c;
            } else if (c < 0x800 && used + 2 < size) {
                out[used++] = (char)(0xC0 | (c >> 6));
                out[used++] = (char)(0x80 | (c & 0x3F));
            } else if (c >= 0x800 && used + 3 < size) {
                out[used++] = (char)(0xE0 | (c >> 12));
                out[used++] = (char)(0x80 | ((c >> 6) & 0x3F));
                out[used++] = (char)(0x80 | (c & 0x3F));
            }
        }
    }
    if (size)
        out[used < size ? used : size - 1] = '\0';
}

EFI_STATUS efi_get_info(EFI_FILE_PROTOCOL *file, EFI_GUID *type, void **info, UINTN *size)
{
    EFI_STATUS status;

    *size = 0;
    *info = NULL;
    status = file->GetInfo(file, type, size, NULL);
    if (status != EFI_BUFFER_TOO_SMALL)
        return status == EFI_SUCCESS ? EFI_DEVICE_ERROR : status;
    *info = efi_allocate(*size);
    if (!*info)
        return EFI_OUT_OF_RESOURCES;
    status = file->GetInfo(file, type, size, *info);
    if (status != EFI_SUCCESS) {
        efi_free(*info);
        *info = NULL;
    }
    return status;
}

const char *efi_status_text(EFI_STATUS status)
{
    static const struct {
        EFI_STATUS status;
        const char *text;
    } texts[] = {
        { EFI_SUCCESS, "Success" },
        { EFI_LOAD_ERROR, "Load Error" },
        { EFI_INVALID_PARAMETER, "Invalid Parameter" },
        { EFI_UNSUPPORTED, "Unsupported" },
        { EFI_BAD_BUFFER_SIZE, "Bad Buffer Size" },
        { EFI_BUFFER_TOO_SMALL, "Buffer Too Small" },
        { EFI_NOT_READY, "Not Ready" },
        { EFI_DEVICE_ERROR, "Device Error" },
        { EFI_WRITE_PROTECTED, "Write Protected" },
        { EFI_OUT_OF_RESOURCES, "Out of Resources" },
        { EFI_VOLUME_CORRUPTED, "Volume Corrupt" },
        { EFI_VOLUME_FULL, "Volume Full" },
        { EFI_NO_MEDIA, "No Media" },
        { EFI_MEDIA_CHANGED, "Media Changed" },
        { EFI_NOT_FOUND, "Not Found" },
        { EFI_ACCESS_DENIED, "Access Denied" },
        { EFI_ALREADY_STARTED, "Already Started" },
        { EFI_ABORTED, "Aborted" },
    };

    for (size_t i = 0; i < ARRAY_SIZE(texts); i++)
        if (texts[i].status == status)
            return texts[i].text;
    return "Error";
}

bool efi_guid_equal(const EFI_GUID *a, const EFI_GUID *b)
{
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;

    for (size_t i = 0; i < sizeof *a; i++)
        if (x[i] != y[i])
            return false;
    return true;
}

size_t str_length(const char *s)
{
    size_t n = 0;

    while (s[n])
        n++;
    return n;
}

bool str_equal(const char *a, const char *b)
{
    while (*a && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

size_t ucs2_length(const CHAR16 *s)
{
    size_t n = 0;

    while (s[n])
        n++;
    return n;
}

const char *utf8_next(const char *text, CHAR16 *out)
{
    const uint8_t *s = (const uint8_t *)text;

    if (s[0] < 0x80) {
        *out = s[0];
        return text + 1;
    }
    if ((s[0] & 0xE0) == 0xC0 && (s[1] & 0xC0) == 0x80) {
        *out = (CHAR16)(((s[0] & 0x1F) << 6) | (s[1] & 0x3F));
        return text + 2;
    }
    if ((s[0] & 0xF0) == 0xE0 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80) {
        *out = (CHAR16)(((s[0] & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F));
        return text + 3;
    }
    *out = '?';
    return text + 1;
}

bool utf8_to_ucs2(const char *text, CHAR16 *out, size_t out_chars)
{
    size_t n = 0;

    while (*text) {
        if (n + 1 >= out_chars)
            return false;
        text = utf8_next(text, &out[n++]);
    }
    if (out_chars == 0)
        return false;
    out[n] = 0;
    return true;
}

EFI_DEVICE_PATH *efi_file_device_path(EFI_HANDLE device, const CHAR16 *path)
{
    EFI_DEVICE_PATH *device_path, *result, *end;
    FILEPATH_DEVICE_PATH *node;
    size_t parent, chars = ucs2_length(path) + 1;
    size_t node_length = SIZE_OF_FILEPATH_DEVICE_PATH + chars * sizeof(CHAR16);

    if (efi_bs->HandleProtocol(device, &efi_device_path_guid, (void **)&device_path) !=
        EFI_SUCCESS)
        return NULL;
    parent = efi_device_path_size(device_path) - END_DEVICE_PATH_LENGTH;
    result = efi_allocate(parent + node_length + END_DEVICE_PATH_LENGTH);
    if (!result)
        return NULL;
    efi_bs->CopyMem(result, device_path, parent);
    node = (FILEPATH_DEVICE_PATH *)((UINT8 *)result + parent);
    node->Header.Type = MEDIA_DEVICE_PATH;
    node->Header.SubType = MEDIA_FILEPATH_DP;
    node->Header.Length[0] = (UINT8)node_length;
    node->Header.Length[1] = (UINT8)(node_length >> 8);
    efi_bs->CopyMem(node->PathName, (void *)path, chars * sizeof(CHAR16));
    end = (EFI_DEVICE_PATH *)((UINT8 *)node + node_length);
    end->Type = END_DEVICE_PATH_TYPE;
    end->SubType = END_ENTIRE_DEVICE_PATH_SUBTYPE;
    end->Length[0] = END_DEVICE_PATH_LENGTH;
    end->Length[1] = 0;
    return result;
}

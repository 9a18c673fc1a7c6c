/*
 * vhdxboot.c - vhdxboot.efi: start the boot loader that sits inside a VHDX file of the
 * EFI System Partition.  Installed as the ESP's \EFI\BOOT\BOOTX64.EFI or named by a
 * Boot#### entry; no shell involved.
 *
 * The steps, undone in mirror order when a later one fails and after the loader
 * returns:
 *
 *   1. switch the boot manager's 5-minute watchdog off: mounting a large image whose
 *      log must be replayed can take minutes, more so under emulation;
 *   2. read the configuration: LoadOptions (a Boot#### entry's optional data), else
 *      vhdxboot.cfg beside this file.  The syntax of vhdx.cfg plus loader=PATH; the
 *      first image= line is the boot disk, further image= lines are mounted too (the
 *      loader and the OS see them) but never searched for the loader;
 *   3. mount the disks with the driver's own module (mount.h, linked in: one file on the
 *      ESP does the whole job, and no driver stays behind when the loader returns); a
 *      file vhdx.efi (or any program of ours) mounted already is used as it is;
 *   4. find the loader: among the file systems the firmware mounted on the boot disk
 *      (its Block I/O connects recursively, so partition and FAT drivers have bound),
 *      EFI System Partitions first (EFI_PARTITION_INFO_PROTOCOL: GPT type C12A7328-...
 *      or MBR type 0xEF), then the others, each group in the firmware's handle order;
 *      the first that has the file wins;
 *   5. LoadImage from that file system's device path plus a file path node, arm the
 *      watchdog again for 5 minutes (what the boot manager gives any boot option), and
 *      StartImage;
 *   6. if the loader returns: take our disks away (which disconnects the partition and
 *      FAT drivers above them, closes the images and marks their logs clean), and
 *      return the loader's status, so the boot manager goes on to its next boot option
 *      (on EFI_SUCCESS it shows its menu instead, as the specification says).
 *
 * When the loader, or the kernel it starts, calls ExitBootServices, the mount module
 * closes the images (shutdown.c): this program is still in memory then, since
 * StartImage has not returned.
 */
#include "console.h"
#include "mount.h"

#define VHDXBOOT_VERSION "0.1.0"
#define VHDXBOOT_CONFIG_NAME "vhdxboot.cfg"
#define DEFAULT_LOADER "\\EFI\\BOOT\\BOOTX64.EFI"
/* What the boot manager arms for every boot option (UEFI 2.10 section 3.1.2). */
#define WATCHDOG_SECONDS 300

/* UEFI 2.10 section 13.18, EFI_PARTITION_INFO_PROTOCOL (not in gnu-efi 3.0.15). */
#define PARTITION_INFO_GUID \
    { 0x8cf2f62c, 0xbc9b, 0x4821, { 0x80, 0x8d, 0xec, 0x9e, 0xc4, 0x21, 0xa1, 0xa0 } }
#define PARTITION_TYPE_MBR 1
#define PARTITION_TYPE_GPT 2
#define MBR_TYPE_ESP 0xEF
#define MBR_RECORD_TYPE_OFFSET 4    /* OSIndicator in an MBR partition record */

struct partition_info {
    UINT32 Revision;
    UINT32 Type;
    UINT8 System;                   /* 1: an EFI System Partition */
    UINT8 Reserved[7];
    union {
        UINT8 Mbr[16];              /* MBR partition record */
        EFI_GUID GptType;           /* the GPT entry starts with its type GUID */
        UINT8 Gpt[128];
    } Info;
};
/* The specification packs it; natural alignment gives the same layout. */
_Static_assert(offsetof(struct partition_info, Info) == 16, "partition_info layout");

/* The GPT type of an EFI System Partition (UEFI 2.10 section 5.3.3). */
#define ESP_TYPE_GUID \
    { 0xc12a7328, 0xf81f, 0x11d2, { 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b } }

static EFI_GUID partition_info_guid = PARTITION_INFO_GUID;
static EFI_GUID esp_type_guid = ESP_TYPE_GUID;
static EFI_GUID shell_parameters_guid = EFI_SHELL_PARAMETERS_PROTOCOL_GUID;

/* One boot attempt: what was configured, mounted and found. */
struct boot {
    struct disk_set disks;
    struct config config;
    char disk_path[CONFIG_PATH_MAX];        /* the boot disk on the ESP, canonical */
    char loader_path[CONFIG_PATH_MAX];      /* the loader in the inner file system */
    CHAR16 loader_name[CONFIG_PATH_MAX];
    const EFI_DEVICE_PATH *disk_device;     /* the boot disk's Block I/O device path */
    bool disk_borrowed;                     /* mounted by another program of ours */
    EFI_HANDLE volume;                      /* the file system holding the loader */
    char volume_text[48];                   /* "partition 1 (EFI System Partition)" */
    EFI_HANDLE loader;
};

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab);

/* Every failure ends the same way: the boot manager tries its next boot option. */
static void __attribute__((format(printf, 1, 2))) give_up(const char *format, ...)
{
    char text[400];
    va_list args;

    va_start(args, format);
    con_vformat(text, sizeof text, format, args);
    va_end(args);
    con_print("vhdxboot: %s; returning to the firmware\n", text);
}

/* --- configuration ------------------------------------------------------------------ */

/*
 * Some firmware hands its own binary data (a GUID, a vendor tag) to the programs of
 * boot options it made itself.  A configuration is text: UTF-16LE or UTF-8 up to the
 * first NUL, with no control characters but tab, CR and LF.
 */
static bool options_are_text(const uint8_t *data, size_t size)
{
    bool utf16 = size >= 2 && ((data[0] == 0xFF && data[1] == 0xFE) ||
                               (size % 2 == 0 && data[0] != 0 && data[1] == 0));
    size_t step = utf16 ? 2 : 1;

    for (size_t i = utf16 && data[0] == 0xFF ? 2 : 0; i + step <= size; i += step) {
        unsigned c = utf16 ? (unsigned)(data[i] | data[i + 1] << 8) : data[i];

        if (c == 0)
            break;
        if (c < 0x20 && c != '\t' && c != '\r' && c != '\n')
            return false;
    }
    return true;
}

static EFI_STATUS configure(struct boot *boot, EFI_HANDLE image)
{
    EFI_LOADED_IMAGE_PROTOCOL *loaded;
    const struct config_disk *first;
    const void *options = NULL;
    size_t options_size = 0;
    const char *why;
    void *shell;
    EFI_STATUS status;

    status = efi_bs->HandleProtocol(image, &efi_loaded_image_guid, (void **)&loaded);
    if (status != EFI_SUCCESS) {
        give_up("cannot find its own loaded image: %s", efi_status_text(status));
        return status;
    }
    /* From the shell, LoadOptions are the command line, not a configuration. */
    if (efi_bs->HandleProtocol(image, &shell_parameters_guid, &shell) == EFI_SUCCESS) {
        con_print("vhdxboot: started from the shell: the configuration comes from "
                  VHDXBOOT_CONFIG_NAME ", not from the command line\n");
    } else if (loaded->LoadOptionsSize &&
               !options_are_text(loaded->LoadOptions, loaded->LoadOptionsSize)) {
        con_print("vhdxboot: the boot option's data (%u bytes) is not text: ignored\n",
                  (unsigned)loaded->LoadOptionsSize);
    } else {
        options = loaded->LoadOptions;
        options_size = loaded->LoadOptionsSize;
    }
    boot->disks.config_name = VHDXBOOT_CONFIG_NAME;
    boot->disks.takes_loader = true;
    boot->disks.uses_mounted = true;
    status = disk_set_configure(&boot->disks, &boot->config, options, options_size);
    if (status != EFI_SUCCESS) {
        if (options_size)
            give_up("no usable configuration in LoadOptions");
        else
            give_up("no usable configuration (LoadOptions, or %s)",
                    boot->disks.config_source);
        return status;
    }
    if (boot->config.disk_count == 0) {
        give_up("%s names no disk to boot (an image= line)", boot->disks.config_source);
        return EFI_NOT_FOUND;
    }
    first = &boot->config.disks[0];
    why = config_resolve_path(boot->disks.directory, first->path, boot->disk_path,
                              sizeof boot->disk_path);
    if (why) {
        give_up("%s line %u: %s: %s", boot->disks.config_source, first->line, first->path,
                why);
        return EFI_INVALID_PARAMETER;
    }
    /* The loader's path is from the root of the inner file system, whatever it says. */
    why = config_resolve_path("", boot->config.loader_line ? boot->config.loader
                                                          : DEFAULT_LOADER,
                              boot->loader_path, sizeof boot->loader_path);
    if (!why && !utf8_to_ucs2(boot->loader_path, boot->loader_name,
                              ARRAY_SIZE(boot->loader_name)))
        why = "the path is too long";
    if (why) {
        give_up("%s line %u: loader=%s: %s", boot->disks.config_source,
                boot->config.loader_line, boot->config.loader, why);
        return EFI_INVALID_PARAMETER;
    }
    con_print("vhdxboot: booting %s from %s (%s)\n", boot->loader_path, boot->disk_path,
              boot->disks.config_source);
    return EFI_SUCCESS;
}

/*
 * The boot disk is the first image= line.  The mount module skips disks that fail, and
 * a file another program of ours mounted already (vhdx.efi as a Driver#### entry, or
 * loaded from the shell) is used as that program mounted it: found by what the file is
 * on the ESP (registry.c), whatever name either configuration gives it.
 */
static EFI_STATUS find_boot_disk(struct boot *boot)
{
    const struct disk_tag *tag;
    EFI_HANDLE handle = disk_set_find(&boot->disks, boot->disk_path, &tag);

    if (handle && efi_bs->HandleProtocol(handle, &efi_device_path_guid,
                                         (void **)&boot->disk_device) == EFI_SUCCESS) {
        boot->disk_borrowed = tag->owner != efi_image_handle;
        if (tag->flags & DISK_TAG_RAM)
            con_print("vhdxboot: %s is a RAM disk: everything written to it, by the loader "
                      "or the OS, lives in memory and is lost at power-off; the file is not "
                      "changed\n", boot->disk_path);
        return EFI_SUCCESS;
    }
    give_up("%s: the boot disk could not be mounted (the reason is above)",
            boot->disk_path);
    return EFI_NOT_FOUND;
}

/* --- finding the loader ------------------------------------------------------------- */

/* Is `path` the device path `prefix` (end node excluded), or one below it? */
static bool path_starts_with(const EFI_DEVICE_PATH *path, const EFI_DEVICE_PATH *prefix)
{
    size_t length = efi_device_path_size(prefix) - END_DEVICE_PATH_LENGTH;
    const uint8_t *a = (const uint8_t *)path, *b = (const uint8_t *)prefix;

    if (efi_device_path_size(path) < length + END_DEVICE_PATH_LENGTH)
        return false;
    for (size_t i = 0; i < length; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

static bool is_esp(EFI_HANDLE handle)
{
    const struct partition_info *info;

    if (efi_bs->HandleProtocol(handle, &partition_info_guid, (void **)&info) != EFI_SUCCESS)
        return false;
    if (info->System == 1)
        return true;
    if (info->Type == PARTITION_TYPE_GPT)
        return efi_guid_equal(&info->Info.GptType, &esp_type_guid);
    if (info->Type == PARTITION_TYPE_MBR)
        return info->Info.Mbr[MBR_RECORD_TYPE_OFFSET] == MBR_TYPE_ESP;
    return false;
}

/* "partition 2" from the HD() node after the disk's own path, or "the whole disk". */
static void describe_volume(struct boot *boot, const EFI_DEVICE_PATH *path, bool esp)
{
    const uint8_t *node = (const uint8_t *)path + efi_device_path_size(boot->disk_device) -
                          END_DEVICE_PATH_LENGTH;
    const EFI_DEVICE_PATH *header = (const EFI_DEVICE_PATH *)node;

    if (DevicePathType(header) == MEDIA_DEVICE_PATH &&
        DevicePathSubType(header) == MEDIA_HARDDRIVE_DP &&
        DevicePathNodeLength(header) >= 8) {
        /* PartitionNumber, little-endian at offset 4 of a possibly unaligned node. */
        uint32_t number = (uint32_t)node[4] | (uint32_t)node[5] << 8 |
                          (uint32_t)node[6] << 16 | (uint32_t)node[7] << 24;

        con_format(boot->volume_text, sizeof boot->volume_text, "partition %u%s", number,
                   esp ? " (EFI System Partition)" : "");
    } else {
        con_format(boot->volume_text, sizeof boot->volume_text, "the whole disk");
    }
}

static EFI_STATUS open_loader(EFI_HANDLE volume, const CHAR16 *name)
{
    EFI_SIMPLE_FILE_SYSTEM_PROTOCOL *file_system;
    EFI_FILE_PROTOCOL *root, *file;
    EFI_STATUS status;

    status = efi_bs->HandleProtocol(volume, &efi_simple_file_system_guid,
                                    (void **)&file_system);
    if (status != EFI_SUCCESS)
        return status;
    status = file_system->OpenVolume(file_system, &root);
    if (status != EFI_SUCCESS)
        return status;
    status = root->Open(root, &file, (CHAR16 *)name, EFI_FILE_MODE_READ, 0);
    if (status == EFI_SUCCESS)
        file->Close(file);
    root->Close(root);
    return status;
}

static EFI_STATUS find_loader(struct boot *boot)
{
    EFI_HANDLE *handles = NULL;
    UINTN count = 0;
    unsigned esps = 0, others = 0;
    EFI_STATUS status;

    if (efi_bs->LocateHandleBuffer(ByProtocol, &efi_simple_file_system_guid, NULL, &count,
                                   &handles) != EFI_SUCCESS)
        count = 0;
    /* Pass 0: EFI System Partitions; pass 1: every other file system of the disk. */
    for (unsigned pass = 0; pass < 2 && !boot->volume; pass++) {
        for (UINTN i = 0; i < count && !boot->volume; i++) {
            EFI_DEVICE_PATH *path;
            bool esp;

            if (efi_bs->HandleProtocol(handles[i], &efi_device_path_guid,
                                       (void **)&path) != EFI_SUCCESS ||
                !path_starts_with(path, boot->disk_device))
                continue;
            esp = is_esp(handles[i]);
            if (esp != (pass == 0))
                continue;
            if (esp)
                esps++;
            else
                others++;
            describe_volume(boot, path, esp);
            status = open_loader(handles[i], boot->loader_name);
            if (status == EFI_SUCCESS)
                boot->volume = handles[i];
            else if (status != EFI_NOT_FOUND || boot->config.verbose)
                con_print("vhdxboot: %s, %s: %s: %s\n", boot->disk_path,
                          boot->volume_text, boot->loader_path, efi_status_text(status));
        }
    }
    efi_free(handles);
    if (boot->volume)
        return EFI_SUCCESS;
    if (esps == 0 && others == 0)
        give_up("%s: no EFI System Partition inside, nor any other file system the "
                "firmware can read", boot->disk_path);
    else if (esps == 0)
        give_up("%s: no EFI System Partition inside, and %s is not on its %u other file "
                "system%s", boot->disk_path, boot->loader_path, others,
                others == 1 ? "" : "s");
    else
        give_up("%s: not found on the EFI System Partition inside %s%s", boot->loader_path,
                boot->disk_path, others ? " nor on its other file systems" : "");
    return EFI_NOT_FOUND;
}

/* --- starting it -------------------------------------------------------------------- */

/*
 * SecureBoot, an EFI global variable (UEFI 2.10 section 3.3): 1 while the platform
 * enforces Secure Boot, so that LoadImage verifies every image against db and dbx (or
 * shim, when shim started this program, against its MOK list and SBAT too).
 */
static bool secure_boot_enforced(void)
{
    EFI_GUID global = EFI_GLOBAL_VARIABLE;
    UINT8 value = 0;
    UINTN size = sizeof value;

    return efi_systab->RuntimeServices->GetVariable((CHAR16 *)L"SecureBoot", &global, NULL,
                                                    &size, &value) == EFI_SUCCESS &&
           size == 1 && value == 1;
}

/*
 * LoadImage refused the image: Security Violation (loaded, but it must not run: the
 * handle has to go again) or Access Denied (not loaded: UEFI 2.10 section 7.4.1).
 * Under Secure Boot both mean the signature check failed, whichever the firmware or
 * shim returns; without it, only the platform's own policy says why.
 */
static void refused(struct boot *boot, EFI_STATUS status)
{
    if (boot->loader)
        efi_bs->UnloadImage(boot->loader);
    boot->loader = NULL;
    if (secure_boot_enforced())
        give_up("%s on %s of %s: refused by Secure Boot (%s): it is not signed with a key "
                "the firmware trusts (db, or shim's MOK list), or it is revoked (dbx, "
                "SBAT); sign it, or enroll the key it is signed with", boot->loader_path,
                boot->volume_text, boot->disk_path, efi_status_text(status));
    else
        give_up("%s on %s of %s: the platform's security policy refuses it (%s; Secure "
                "Boot is off)", boot->loader_path, boot->volume_text, boot->disk_path,
                efi_status_text(status));
}

static EFI_STATUS load_loader(struct boot *boot, EFI_HANDLE image)
{
    EFI_DEVICE_PATH *path;
    EFI_STATUS status;

    path = efi_file_device_path(boot->volume, boot->loader_name);
    if (!path) {
        give_up("%s: out of memory", boot->loader_path);
        return EFI_OUT_OF_RESOURCES;
    }
    boot->loader = NULL;
    status = efi_bs->LoadImage(FALSE, image, path, NULL, 0, &boot->loader);
    efi_free(path);
    switch (status) {
    case EFI_SUCCESS:
        return EFI_SUCCESS;
    case EFI_SECURITY_VIOLATION:
    case EFI_ACCESS_DENIED:
        refused(boot, status);
        return status;
    default:
        give_up("%s on %s of %s: cannot load it: %s%s", boot->loader_path,
                boot->volume_text, boot->disk_path, efi_status_text(status),
                status == EFI_LOAD_ERROR || status == EFI_UNSUPPORTED ?
                " (not an EFI application for this machine)" : "");
        return status;
    }
}

static EFI_STATUS start_loader(struct boot *boot)
{
    UINTN exit_data_size = 0;
    CHAR16 *exit_data = NULL;
    EFI_STATUS status;

    con_print("vhdxboot: starting %s from %s of %s\n", boot->loader_path, boot->volume_text,
              boot->disk_path);
    /* The loader gets the time any boot option gets, from now on. */
    efi_bs->SetWatchdogTimer(WATCHDOG_SECONDS, 0, 0, NULL);
    status = efi_bs->StartImage(boot->loader, &exit_data_size, &exit_data);
    efi_bs->SetWatchdogTimer(0, 0, 0, NULL);
    /* The image is gone (the firmware unloads an application that returns). */
    boot->loader = NULL;
    efi_free(exit_data);
    if (boot->disk_borrowed)
        con_print("vhdxboot: %s returned (%s); %s stays with the program that mounted it; "
                  "returning to the firmware\n", boot->loader_path, efi_status_text(status),
                  boot->disk_path);
    else
        con_print("vhdxboot: %s returned (%s); taking %s away and returning to the "
                  "firmware\n", boot->loader_path, efi_status_text(status), boot->disk_path);
    return status;
}

/*
 * The loader returned, but something it left behind still holds a disk.  This image is
 * about to be freed with the disk's Block I/O in it: close the images (they are then
 * consistent and clean), and stop here rather than let the firmware call freed code.
 */
static void __attribute__((noreturn)) halt_in_use(struct boot *boot)
{
    disk_set_shutdown(&boot->disks, false);
    con_print("vhdxboot: a driver the loader left behind still uses the disk; the image "
              "is closed and clean, but returning would leave the disk's code freed "
              "under that driver: halted, turn the machine off\n");
    for (;;)
        efi_bs->Stall(1000000);
}

/* Entered from gnu-efi's crt0 with the System V convention: not EFIAPI. */
EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
    struct boot *boot;
    EFI_STATUS status;

    efi_system_init(image, systab);
    /* Mounting may replay a long log: no watchdog until the loader starts. */
    efi_bs->SetWatchdogTimer(0, 0, 0, NULL);
    con_print("vhdxboot.efi " VHDXBOOT_VERSION " (core " VHDX_CORE_VERSION
              "): start a boot loader inside a VHDX on the EFI System Partition\n");
    boot = efi_allocate_zero(sizeof *boot);
    if (!boot) {
        give_up("out of memory");
        status = EFI_OUT_OF_RESOURCES;
        goto err_alloc;
    }
    status = disk_set_init(&boot->disks, image);
    if (status != EFI_SUCCESS) {
        give_up("cannot use the device it was started from");
        goto err_init;
    }
    status = configure(boot, image);
    if (status != EFI_SUCCESS)
        goto err_configure;
    status = disk_set_watch(&boot->disks);
    if (status != EFI_SUCCESS) {
        give_up("cannot watch for ExitBootServices and reset: %s", efi_status_text(status));
        goto err_watch;
    }
    disk_set_mount(&boot->disks, &boot->config);
    status = find_boot_disk(boot);
    if (status != EFI_SUCCESS)
        goto err_mount;
    status = find_loader(boot);
    if (status != EFI_SUCCESS)
        goto err_find;
    status = load_loader(boot, image);
    if (status != EFI_SUCCESS)
        goto err_load;
    status = start_loader(boot);

err_load:
err_find:
err_mount:
    if (disk_set_unmount(&boot->disks) != EFI_SUCCESS)
        halt_in_use(boot);
    disk_set_unwatch(&boot->disks);
err_watch:
err_configure:
err_init:
    efi_free(boot);
err_alloc:
    return status;
}

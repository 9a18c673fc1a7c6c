/*
 * disk.c - configuration to mounted disks: find the ESP, read the disk list, map each
 * file, make room for new blocks, open the image, install its Block I/O (see disk.h).
 */
#include "disk.h"

#include "console.h"
#include "handoff.h"

#define CONFIG_FILE_NAME "vhdx.cfg"
#define CONFIG_FILE_MAX (64u * 1024u)
/* The largest FAT file is 4 GiB - 1; VHDX allocates in whole MiB below that. */
#define FAT_FILE_LIMIT 0xFFF00000ull

static void format_size(char *out, size_t size, uint64_t bytes)
{
    if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0)
        con_format(out, size, "%llu GiB", (unsigned long long)(bytes >> 30));
    else if (bytes % (1ull << 20) == 0)
        con_format(out, size, "%llu MiB", (unsigned long long)(bytes >> 20));
    else
        con_format(out, size, "%llu bytes", (unsigned long long)bytes);
}

static void print_diag(const char *path, const char *doing, const struct vhdx_diag *diag)
{
    char reason[200];

    vhdx_describe(diag, reason, sizeof reason);
    con_print("vhdx: %s: %s%s\n", path, doing, reason);
}

/* --- the ESP and the configuration -------------------------------------------------- */

/* The directory of the loaded image, from its file path nodes ("\EFI\vhdx"). */
static void image_directory(const EFI_DEVICE_PATH *path, char *out, size_t size)
{
    size_t used = 0, last_separator = 0;

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
    for (size_t i = 0; i < used; i++)
        if (out[i] == '\\' || out[i] == '/')
            last_separator = i;
    /* Keep "\EFI\vhdx" of "\EFI\vhdx\vhdx.efi" ("" for the root directory). */
    out[last_separator] = '\0';
}

EFI_STATUS disk_set_init(struct disk_set *set, EFI_HANDLE image)
{
    EFI_LOADED_IMAGE_PROTOCOL *loaded;
    EFI_STATUS status;

    efi_bs->SetMem(set, sizeof *set, 0);
    status = efi_bs->HandleProtocol(image, &efi_loaded_image_guid, (void **)&loaded);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: cannot find the loaded image: %s\n", efi_status_text(status));
        return status;
    }
    status = efi_esp_init(&set->esp, loaded->DeviceHandle);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: the device the driver was loaded from has no usable Block I/O "
                  "and Disk I/O: %s\n", efi_status_text(status));
        return status;
    }
    /* Optional: needed only to read vhdx.cfg and to extend files. */
    if (efi_bs->HandleProtocol(loaded->DeviceHandle, &efi_simple_file_system_guid,
                               (void **)&set->file_system) != EFI_SUCCESS)
        set->file_system = NULL;
    image_directory(loaded->FilePath, set->directory, sizeof set->directory);
    return EFI_SUCCESS;
}

struct report_context {
    const char *source;
};

static void report_config(void *context, unsigned line, const char *message)
{
    const struct report_context *report = context;

    con_print("vhdx: %s line %u: %s\n", report->source, line, message);
}

/* Open a file of the ESP by its UTF-8 path. */
static EFI_STATUS open_file(struct disk_set *set, const char *path, UINT64 mode,
                            EFI_FILE_PROTOCOL **root, EFI_FILE_PROTOCOL **file)
{
    CHAR16 name[CONFIG_PATH_MAX];
    EFI_STATUS status;

    if (!set->file_system)
        return EFI_UNSUPPORTED;
    if (!utf8_to_ucs2(path, name, ARRAY_SIZE(name)))
        return EFI_INVALID_PARAMETER;
    status = set->file_system->OpenVolume(set->file_system, root);
    if (status != EFI_SUCCESS)
        return status;
    status = (*root)->Open(*root, file, name, mode, 0);
    if (status != EFI_SUCCESS)
        (*root)->Close(*root);
    return status;
}

/* The file's EFI_FILE_INFO in pool memory. */
static EFI_STATUS file_info(EFI_FILE_PROTOCOL *file, EFI_FILE_INFO **info, UINTN *size)
{
    EFI_STATUS status;

    *size = 0;
    *info = NULL;
    status = file->GetInfo(file, &efi_file_info_guid, size, NULL);
    if (status != EFI_BUFFER_TOO_SMALL)
        return status == EFI_SUCCESS ? EFI_DEVICE_ERROR : status;
    *info = efi_allocate(*size);
    if (!*info)
        return EFI_OUT_OF_RESOURCES;
    status = file->GetInfo(file, &efi_file_info_guid, size, *info);
    if (status != EFI_SUCCESS) {
        efi_free(*info);
        *info = NULL;
    }
    return status;
}

/* Read vhdx.cfg (at most CONFIG_FILE_MAX bytes) into pool memory. */
static EFI_STATUS read_config_file(struct disk_set *set, const char *path, void **data,
                                   size_t *size)
{
    EFI_FILE_PROTOCOL *root, *file;
    EFI_FILE_INFO *info;
    UINTN info_size, length;
    EFI_STATUS status;

    status = open_file(set, path, EFI_FILE_MODE_READ, &root, &file);
    if (status != EFI_SUCCESS)
        goto err_open;
    status = file_info(file, &info, &info_size);
    if (status != EFI_SUCCESS)
        goto err_info;
    if (info->FileSize > CONFIG_FILE_MAX || (info->Attribute & EFI_FILE_DIRECTORY)) {
        status = EFI_BAD_BUFFER_SIZE;
        goto err_size;
    }
    length = (UINTN)info->FileSize;
    *data = efi_allocate(length);
    if (!*data) {
        status = EFI_OUT_OF_RESOURCES;
        goto err_alloc;
    }
    status = file->Read(file, &length, *data);
    if (status != EFI_SUCCESS)
        goto err_read;
    *size = length;
    efi_free(info);
    file->Close(file);
    root->Close(root);
    return EFI_SUCCESS;

err_read:
    efi_free(*data);
    *data = NULL;
err_alloc:
err_size:
    efi_free(info);
err_info:
    file->Close(file);
    root->Close(root);
err_open:
    return status;
}

static bool only_blanks(const char *text, size_t length)
{
    for (size_t i = 0; i < length; i++)
        if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n')
            return false;
    return true;
}

EFI_STATUS disk_set_configure(struct disk_set *set, struct config *config,
                              const void *options, size_t size)
{
    char file_path[CONFIG_PATH_MAX];
    struct report_context report = { "LoadOptions" };
    void *file_data = NULL;
    const void *raw = options;
    const char *why;
    char *text;
    size_t length;
    EFI_STATUS status;

    con_format(set->config_source, sizeof set->config_source, "%s", report.source);
    text = efi_allocate(3 * CONFIG_FILE_MAX);
    if (!text) {
        status = EFI_OUT_OF_RESOURCES;
        goto err_alloc;
    }
    /* LoadOptions (a Driver#### entry's data, or a loader's) replace the file. */
    length = raw && size ? config_decode(raw, size, text, 3 * CONFIG_FILE_MAX, &why) : 0;
    if (length == (size_t)-1) {
        con_print("vhdx: LoadOptions: %s\n", why);
        status = EFI_INVALID_PARAMETER;
        goto err_decode_options;
    }
    if (only_blanks(text, length)) {
        const char *name = set->config_name ? set->config_name : CONFIG_FILE_NAME;

        why = config_resolve_path(set->directory, name, file_path, sizeof file_path);
        if (why) {
            con_print("vhdx: %s\\%s: %s\n", set->directory, name, why);
            status = EFI_INVALID_PARAMETER;
            goto err_path;
        }
        report.source = file_path;
        con_format(set->config_source, sizeof set->config_source, "%s", file_path);
        status = read_config_file(set, file_path, &file_data, &size);
        if (status != EFI_SUCCESS) {
            con_print("vhdx: %s: cannot read the disk list: %s%s\n", file_path,
                      efi_status_text(status),
                      status == EFI_BAD_BUFFER_SIZE ? " (larger than 64 KiB)" : "");
            goto err_read;
        }
        length = config_decode(file_data, size, text, 3 * CONFIG_FILE_MAX, &why);
        if (length == (size_t)-1) {
            con_print("vhdx: %s: %s\n", file_path, why);
            status = EFI_INVALID_PARAMETER;
            goto err_decode_file;
        }
    }
    config_parse(config, text, length, report_config, &report);
    if (config->loader_line && !set->takes_loader)
        report_config(&report, config->loader_line,
                      "loader= is a key of vhdxboot.efi: ignored here");
    set->verbose = config->verbose;
    if (set->verbose)
        con_print("vhdx: disk list from %s: %u disk(s), %u problem(s)\n", report.source,
                  config->disk_count, config->errors);
    if (config->disk_count == 0 && config->errors == 0)
        con_print("vhdx: %s: no image= line\n", report.source);
    status = EFI_SUCCESS;

err_decode_file:
    efi_free(file_data);
err_read:
err_path:
err_decode_options:
    efi_free(text);
err_alloc:
    return status;
}

/* --- mounting one disk -------------------------------------------------------------- */

/* Set the file's name and flags again after each mapping (mapping clears them). */
static void prepare_file(struct mounted_disk *disk, bool read_only)
{
    disk->file.name = disk->path;
    disk->file.verbose = disk->verbose;
    disk->file.read_only = read_only;
    efi_esp_platform(&disk->file, &disk->platform);
}

static bool map_file(struct disk_set *set, struct mounted_disk *disk)
{
    const char *detail;
    enum fat_error err = efi_esp_map(&disk->file, &set->esp, disk->path, &detail);

    if (err == FAT_OK)
        return true;
    con_print("vhdx: %s: %s%s%s\n", disk->path,
              err == FAT_E_NOT_FOUND ? "not found on the ESP" : fat_strerror(err),
              detail ? ": " : "", detail ? detail : "");
    return false;
}

/* Extend the file through the firmware's FAT driver, then make the change durable. */
static EFI_STATUS extend_file(struct disk_set *set, const char *path, uint64_t new_size)
{
    EFI_FILE_PROTOCOL *root, *file;
    EFI_FILE_INFO *info;
    UINTN info_size;
    EFI_STATUS status;

    status = open_file(set, path, EFI_FILE_MODE_READ | EFI_FILE_MODE_WRITE, &root, &file);
    if (status != EFI_SUCCESS)
        goto err_open;
    status = file_info(file, &info, &info_size);
    if (status != EFI_SUCCESS)
        goto err_info;
    info->FileSize = new_size;
    status = file->SetInfo(file, &efi_file_info_guid, info_size, info);
    if (status != EFI_SUCCESS)
        goto err_set;
    /* The FAT driver caches; our mapping reads the partition directly next. */
    status = file->Flush(file);

err_set:
    efi_free(info);
err_info:
    file->Close(file);
    root->Close(root);
err_open:
    return status;
}

/*
 * Writable disks that may allocate: make sure the file has `reserve` bytes of room past
 * its allocated data (see disk.h).  A failure to extend is reported and tolerated: the
 * disk mounts, and writes needing new blocks fail cleanly.  Returns false only when
 * the image cannot be opened at all (reported).
 */
static bool make_room(struct disk_set *set, struct mounted_disk *disk, uint64_t reserve)
{
    struct vhdx_disk *probe;
    struct vhdx_diag diag;
    struct vhdx_info info;
    uint64_t target;
    char old_text[24], new_text[24];
    EFI_STATUS status;
    int rc;

    /* The real open repeats whatever this one would say: keep it silent. */
    prepare_file(disk, true);
    disk->file.quiet = true;
    rc = vhdx_open(&disk->platform, 0, &probe, &diag);
    disk->file.quiet = false;
    if (rc != VHDX_OK) {
        print_diag(disk->path, "", &diag);
        return false;
    }
    vhdx_get_info(probe, &info);
    vhdx_close(probe, NULL);
    /* Every block present (a true fixed image): nothing is ever allocated.  QEMU's
     * "fixed" images start with blocks in the ZERO state and allocate like dynamic ones. */
    if (info.blocks_present == info.blocks_total || reserve == 0)
        return true;
    reserve = (reserve + info.block_size - 1) / info.block_size * info.block_size;
    target = info.used_size + reserve;
    if (target > FAT_FILE_LIMIT)
        target = FAT_FILE_LIMIT;
    if (disk->file.size >= target) {
        if (disk->verbose)
            con_print("vhdx: %s: room for %llu new block(s) of %u MiB\n", disk->path,
                      (unsigned long long)((disk->file.size - info.used_size) /
                                           info.block_size), info.block_size >> 20);
        return true;
    }
    format_size(old_text, sizeof old_text, disk->file.size);
    format_size(new_text, sizeof new_text, target);
    status = extend_file(set, disk->path, target);
    if (status != EFI_SUCCESS)
        con_print("vhdx: %s: warning: cannot extend the file from %s to %s for new "
                  "blocks: %s\n", disk->path, old_text, new_text, efi_status_text(status));
    else if (disk->verbose)
        con_print("vhdx: %s: extended the file from %s to %s for new blocks\n",
                  disk->path, old_text, new_text);
    efi_esp_unmap(&disk->file);
    return map_file(set, disk);
}

static const char *type_name(enum vhdx_disk_type type)
{
    return type == VHDX_TYPE_FIXED ? "fixed" : type == VHDX_TYPE_DYNAMIC ? "dynamic"
                                                                         : "differencing";
}

static void print_disk(const struct mounted_disk *disk)
{
    const struct vhdx_info *info = &disk->info;
    char size[24], log[64], physical[32] = "";

    format_size(size, sizeof size, info->virtual_size);
    if (info->physical_sector_size != info->logical_sector_size)
        con_format(physical, sizeof physical, " (%u physical)", info->physical_sector_size);
    if (info->log_state == VHDX_LOG_WAS_CLEAN)
        con_format(log, sizeof log, "log clean");
    else
        con_format(log, sizeof log, "log replayed %swith %u entries",
                   info->log_state == VHDX_LOG_REPLAYED_IN_MEMORY ? "in memory " : "",
                   info->log_entries_replayed);
    con_print("vhdx: %s: %s, %s, %u-byte sectors%s, %s%s\n", disk->path,
              type_name(info->type), size, info->logical_sector_size, physical, log,
              disk->writable ? "" : ", read-only");
    if (disk->verbose)
        con_print("vhdx: %s: %u extent(s) on the ESP, file %llu bytes, data ends at %llu, "
                  "%u MiB blocks, %llu of %llu present\n", disk->path,
                  disk->file.extent_count, (unsigned long long)disk->file.size,
                  (unsigned long long)info->used_size, info->block_size >> 20,
                  (unsigned long long)info->blocks_present,
                  (unsigned long long)info->blocks_total);
}

static const struct mounted_disk *find_mounted(const struct disk_set *set,
                                               uint64_t entry_offset)
{
    for (const struct mounted_disk *d = set->disks; d; d = d->next)
        if (d->file.entry_offset == entry_offset)
            return d;
    return NULL;
}

static EFI_STATUS disk_mount(struct disk_set *set, const struct config *config,
                             const struct config_disk *entry, struct mounted_disk **out)
{
    struct mounted_disk *disk;
    const struct mounted_disk *twin;
    struct vhdx_diag diag;
    uint64_t reserve;
    const char *why;
    bool writable;
    EFI_STATUS status = EFI_LOAD_ERROR;

    disk = efi_allocate_zero(sizeof *disk);
    if (!disk) {
        con_print("vhdx: %s: out of memory\n", entry->path);
        status = EFI_OUT_OF_RESOURCES;
        goto err_alloc;
    }
    why = config_resolve_path(set->directory, entry->path, disk->path, sizeof disk->path);
    if (why) {
        con_print("vhdx: %s: %s\n", entry->path, why);
        goto err_path;
    }
    disk->verbose = config->verbose || entry->verbose;
    writable = !entry->read_only;
    if (writable && set->esp.read_only) {
        con_print("vhdx: %s: the ESP is write-protected: mounting read-only\n", disk->path);
        writable = false;
    }
    disk->device_path = disk_device_path(set->esp.device_path, disk->path);
    if (!disk->device_path) {
        con_print("vhdx: %s: out of memory\n", disk->path);
        goto err_device_path;
    }
    if (disk_device_path_taken(disk->device_path)) {
        con_print("vhdx: %s: already mounted\n", disk->path);
        status = EFI_ALREADY_STARTED;
        goto err_taken;
    }
    if (!map_file(set, disk))
        goto err_map;
    twin = find_mounted(set, disk->file.entry_offset);
    if (twin) {
        con_print("vhdx: %s: already mounted as %s\n", disk->path, twin->path);
        status = EFI_ALREADY_STARTED;
        goto err_twin;
    }
    if (writable && (disk->file.attributes & FAT_ATTR_READ_ONLY)) {
        con_print("vhdx: %s: the file is marked read-only: mounting read-only\n",
                  disk->path);
        writable = false;
    }
    reserve = entry->reserve_given ? entry->reserve
              : config->reserve_given ? config->reserve : DISK_DEFAULT_RESERVE;
    if (writable && !make_room(set, disk, reserve))
        goto err_room;

    prepare_file(disk, !writable);
    if (vhdx_open(&disk->platform, writable ? VHDX_OPEN_WRITABLE : 0, &disk->vhdx,
                  &diag) != VHDX_OK) {
        print_diag(disk->path, "", &diag);
        goto err_open;
    }
    vhdx_get_info(disk->vhdx, &disk->info);
    if (disk->info.type == VHDX_TYPE_DIFFERENCING) {
        con_print("vhdx: %s: differencing disks are not supported\n", disk->path);
        status = EFI_UNSUPPORTED;
        goto err_type;
    }
    disk->writable = !disk->info.read_only;

    status = blockio_install(disk, &set->esp);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: %s: cannot install Block I/O: %s\n", disk->path,
                  efi_status_text(status));
        goto err_install;
    }
    print_disk(disk);
    handoff_publish(set, disk);
    *out = disk;
    return EFI_SUCCESS;

err_install:
err_type:
    vhdx_close(disk->vhdx, NULL);
err_open:
err_room:
err_twin:
    efi_esp_unmap(&disk->file);
err_map:
err_taken:
    efi_free(disk->device_path);
err_device_path:
err_path:
    efi_free(disk);
err_alloc:
    return status;
}

unsigned disk_set_mount(struct disk_set *set, const struct config *config)
{
    struct mounted_disk **tail = &set->disks;

    while (*tail)
        tail = &(*tail)->next;
    for (unsigned i = 0; i < config->disk_count; i++) {
        struct mounted_disk *disk;

        if (disk_mount(set, config, &config->disks[i], &disk) != EFI_SUCCESS)
            continue;
        *tail = disk;
        tail = &disk->next;
        set->count++;
    }
    return set->count;
}

/* --- taking disks away ---------------------------------------------------------------- */

EFI_STATUS disk_set_unmount(struct disk_set *set)
{
    while (set->disks) {
        struct mounted_disk *disk = set->disks;
        struct vhdx_diag diag;
        EFI_STATUS status;

        status = blockio_uninstall(disk, &set->esp);
        if (status != EFI_SUCCESS) {
            con_print("vhdx: %s: still in use, cannot be removed: %s\n", disk->path,
                      efi_status_text(status));
            return status;
        }
        if (disk->vhdx && vhdx_close(disk->vhdx, &diag) != VHDX_OK)
            print_diag(disk->path, "closing: ", &diag);
        disk->vhdx = NULL;
        handoff_withdraw(disk);
        set->disks = disk->next;
        set->count--;
        efi_esp_unmap(&disk->file);
        efi_free(disk->device_path);
        efi_free(disk);
    }
    return EFI_SUCCESS;
}

void disk_set_shutdown(struct disk_set *set, bool boot_services_gone)
{
    for (struct mounted_disk *disk = set->disks; disk; disk = disk->next) {
        struct vhdx_diag diag;
        int rc;

        if (disk->stopped)
            continue;
        /* Refuse I/O first: nothing may reach the core while it closes. */
        disk->stopped = true;
        disk->file.boot_services_gone = boot_services_gone;
        handoff_closing(disk);
        rc = vhdx_close(disk->vhdx, &diag);
        disk->vhdx = NULL;
        if (!boot_services_gone)
            handoff_closed(disk, rc == VHDX_OK);
        if (boot_services_gone)
            continue;           /* no console either */
        if (rc != VHDX_OK)
            print_diag(disk->path, "closing: ", &diag);
        else if (disk->verbose)
            con_print("vhdx: %s: closed\n", disk->path);
    }
}

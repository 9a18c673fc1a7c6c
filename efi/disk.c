/*
 * disk.c - configuration to mounted disks: find the ESP, read the disk list, map each
 * file, make room for new blocks, open the image, install its Block I/O (see disk.h).
 */
#include "disk.h"

#include "console.h"

#define CONFIG_FILE_NAME "vhdx.cfg"
#define CONFIG_FILE_MAX (64u * 1024u)
/* The largest FAT file is 4 GiB - 1; VHDX allocates in whole MiB below that. */
#define FAT_FILE_LIMIT 0xFFF00000ull

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
    size_t last_separator = 0;

    efi_path_text(path, out, size);
    for (size_t i = 0; out[i]; i++)
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

EFI_STATUS disk_open_file(struct disk_set *set, const char *path, UINT64 mode,
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

/* Read vhdx.cfg (at most CONFIG_FILE_MAX bytes) into pool memory. */
static EFI_STATUS read_config_file(struct disk_set *set, const char *path, void **data,
                                   size_t *size)
{
    EFI_FILE_PROTOCOL *root, *file;
    EFI_FILE_INFO *info;
    UINTN info_size, length;
    EFI_STATUS status;

    status = disk_open_file(set, path, EFI_FILE_MODE_READ, &root, &file);
    if (status != EFI_SUCCESS)
        goto err_open;
    status = efi_get_info(file, &efi_file_info_guid, (void **)&info, &info_size);
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

EFI_STATUS disk_change_file(struct disk_set *set, const char *path,
                            const struct file_change *change)
{
    /* A size needs a handle for writing; attributes change through one for reading,
     * which a read-only file allows (EDK II FatPkg Info.c). */
    UINT64 mode = EFI_FILE_MODE_READ | (change->resize ? EFI_FILE_MODE_WRITE : 0);
    EFI_FILE_PROTOCOL *root, *file;
    EFI_FILE_INFO *info;
    UINTN info_size;
    EFI_STATUS status;

    status = disk_open_file(set, path, mode, &root, &file);
    if (status != EFI_SUCCESS)
        goto err_open;
    status = efi_get_info(file, &efi_file_info_guid, (void **)&info, &info_size);
    if (status != EFI_SUCCESS)
        goto err_info;
    if (change->resize)
        info->FileSize = change->size;
    info->Attribute = (info->Attribute | change->set_attributes) & ~change->clear_attributes;
    /* The times go back as they were read, so the FAT driver keeps them. */
    status = file->SetInfo(file, &efi_file_info_guid, info_size, info);
    if (status != EFI_SUCCESS)
        goto err_set;
    /*
     * The FAT driver caches file data, and our mapping reads the partition directly
     * next; a directory entry is written before SetInfo returns (and Flush is refused
     * on a handle for reading).  Then the device's own cache.
     */
    if (change->resize)
        status = file->Flush(file);
    if (status == EFI_SUCCESS)
        set->esp.block_io->FlushBlocks(set->esp.block_io);

err_set:
    efi_free(info);
err_info:
    file->Close(file);
    root->Close(root);
err_open:
    return status;
}

/* Free bytes of the ESP's file system, as its FAT driver counts them. */
static EFI_STATUS esp_free_space(struct disk_set *set, uint64_t *free_bytes)
{
    EFI_FILE_PROTOCOL *root;
    EFI_FILE_SYSTEM_INFO *info;
    UINTN size;
    EFI_STATUS status;

    if (!set->file_system)
        return EFI_UNSUPPORTED;
    status = set->file_system->OpenVolume(set->file_system, &root);
    if (status != EFI_SUCCESS)
        return status;
    status = efi_get_info(root, &efi_file_system_info_guid, (void **)&info, &size);
    if (status == EFI_SUCCESS) {
        *free_bytes = info->FreeSpace;
        efi_free(info);
    }
    root->Close(root);
    return status;
}

/* What a writable disk asks for: its own line's reserve= or expand, else the global. */
static void room_request(const struct config *config, const struct config_disk *entry,
                         struct mounted_disk *disk)
{
    disk->expand = entry->expand || (!entry->reserve_given && config->expand);
    disk->reserve = entry->reserve_given ? entry->reserve
                    : config->reserve_given ? config->reserve : DISK_DEFAULT_RESERVE;
}

enum room { ROOM_ENOUGH, ROOM_SHORT, ROOM_NO_IMAGE };

/* The room a writable mount needs (disk.h): bytes, whole blocks, at most what is left. */
static uint64_t room_needed(const struct mounted_disk *disk, const struct vhdx_info *info)
{
    uint64_t unallocated = (info->blocks_total - info->blocks_present) * info->block_size;
    uint64_t reserve = (disk->reserve + info->block_size - 1) / info->block_size *
                       info->block_size;

    return disk->expand || reserve > unallocated ? unallocated : reserve;
}

/*
 * The room cannot be made: say why and what would do, in one line.  `possible` is the
 * most room the file could have; `esp_helps`: freeing space on the ESP would.
 */
static void room_short(const struct mounted_disk *disk, uint64_t need, uint64_t possible,
                       const char *why, bool esp_helps)
{
    const char *free_it = esp_helps ? "free space on the ESP, or " : "";
    char need_text[24], possible_text[24];

    con_size_text(need_text, sizeof need_text, need);
    con_size_text(possible_text, sizeof possible_text, possible);
    if (disk->expand)
        con_print("vhdx: %s: cannot expand the file for all its blocks (%s of room): %s: "
                  "mounting read-only (%sdrop expand)\n", disk->path, need_text, why,
                  free_it);
    else if (possible == 0)
        con_print("vhdx: %s: no room for new blocks, and the reserve asks for %s: %s: "
                  "mounting read-only (%sset reserve=0 to mount it writable with no room to "
                  "grow)\n", disk->path, need_text, why, free_it);
    else
        con_print("vhdx: %s: room for at most %s of new blocks, and the reserve asks for %s: "
                  "%s: mounting read-only (%saccept less room with reserve=%lluM; reserve=0 "
                  "for none)\n", disk->path, possible_text, need_text, why, free_it,
                  (unsigned long long)(possible >> 20));
}

/*
 * Writable disks: make sure the file has the room for new blocks the configuration asks
 * for (see disk.h), growing it through the firmware's FAT driver by what is missing.
 * ROOM_SHORT (reported): the disk must mount read-only, and the file was not touched.
 * ROOM_NO_IMAGE (reported): the image cannot be opened at all.
 */
static enum room make_room(struct disk_set *set, struct mounted_disk *disk)
{
    struct vhdx_disk *probe;
    struct vhdx_diag diag;
    struct vhdx_info info;
    uint64_t need, limit, free_bytes = 0, possible, target;
    char old_text[24], new_text[24], why[96];
    EFI_STATUS status;
    int rc;

    /* The real open repeats whatever this one would say: keep it silent. */
    prepare_file(disk, true);
    disk->file.quiet = true;
    rc = vhdx_open(&disk->platform, 0, &probe, &diag);
    disk->file.quiet = false;
    if (rc != VHDX_OK) {
        print_diag(disk->path, "", &diag);
        return ROOM_NO_IMAGE;
    }
    vhdx_get_info(probe, &info);
    vhdx_close(probe, NULL);
    disk->room = disk->file.size > info.used_size ? disk->file.size - info.used_size : 0;
    /* Every block present (a true fixed image): nothing is ever allocated.  QEMU's
     * "fixed" images start with blocks in the ZERO state and allocate like dynamic ones. */
    need = room_needed(disk, &info);
    if (disk->room >= need) {
        if (disk->verbose)
            con_print("vhdx: %s: room for %llu new block(s) of %u MiB\n", disk->path,
                      (unsigned long long)(disk->room / info.block_size),
                      info.block_size >> 20);
        return ROOM_ENOUGH;
    }
    /* What the file can reach: FAT's largest file, then the ESP's free space. */
    limit = FAT_FILE_LIMIT > info.used_size ? FAT_FILE_LIMIT - info.used_size : 0;
    limit -= limit % info.block_size;
    if (limit < need) {
        con_size_text(new_text, sizeof new_text, info.used_size + need);
        con_format(why, sizeof why, "the file would be %s, and a FAT file holds at most "
                   "4 GiB - 1 byte", new_text);
        room_short(disk, need, limit, why, false);
        return ROOM_SHORT;
    }
    status = esp_free_space(set, &free_bytes);
    if (status != EFI_SUCCESS) {
        con_format(why, sizeof why, "the firmware cannot grow files on the ESP (%s)",
                   efi_status_text(status));
        room_short(disk, need, disk->room - disk->room % info.block_size, why, false);
        return ROOM_SHORT;
    }
    possible = disk->file.size - info.used_size + free_bytes;
    if (disk->file.size < info.used_size)
        possible = free_bytes;
    possible = possible < limit ? possible - possible % info.block_size : limit;
    if (possible < need) {
        con_size_text(new_text, sizeof new_text, free_bytes);
        con_format(why, sizeof why, "the ESP has %s free", new_text);
        room_short(disk, need, possible, why, true);
        return ROOM_SHORT;
    }
    target = info.used_size + need;
    con_size_text(old_text, sizeof old_text, disk->file.size);
    con_size_text(new_text, sizeof new_text, target);
    status = disk_change_file(set, disk->path,
                              &(struct file_change){ .resize = true, .size = target });
    /* Even a failed extension may have changed the file: map it again either way. */
    efi_esp_unmap(&disk->file);
    if (!map_file(set, disk))
        return ROOM_NO_IMAGE;
    if (status != EFI_SUCCESS) {
        con_print("vhdx: %s: cannot extend the file from %s to %s for new blocks: %s: "
                  "mounting read-only\n", disk->path, old_text, new_text,
                  efi_status_text(status));
        return ROOM_SHORT;
    }
    disk->room = disk->file.size - info.used_size;
    if (disk->verbose)
        con_print("vhdx: %s: extended the file from %s to %s for new blocks\n",
                  disk->path, old_text, new_text);
    return ROOM_ENOUGH;
}

/*
 * Can a disk asked for writable be written on this medium?  Not when the ESP is
 * write-protected, nor when the file carries the read-only attribute (unless an
 * earlier mount of ours left it: guard.c), nor when the medium refuses a write the
 * firmware did not say it would refuse.  Says why when not.
 */
static bool medium_writable(struct disk_set *set, struct mounted_disk *disk)
{
    EFI_STATUS status;

    if (set->esp.read_only) {
        con_print("vhdx: %s: the ESP is write-protected: mounting read-only\n", disk->path);
        return false;
    }
    if (disk->file.attributes & FAT_ATTR_READ_ONLY) {
        if (!guard_left_behind(set, disk)) {
            con_print("vhdx: %s: the file is marked read-only: mounting read-only (`attrib "
                      "-r` in the shell clears the mark)\n", disk->path);
            return false;
        }
        status = guard_clear(set, disk);
        con_print("vhdx: %s: the file is still marked read-only by a mount that did not end "
                  "(the machine stopped while it was mounted): %s\n", disk->path,
                  status == EFI_SUCCESS ? "mark cleared" : efi_status_text(status));
        if (status != EFI_SUCCESS)
            return false;
    }
    status = efi_esp_probe_write(&disk->file);
    if (status != EFI_SUCCESS) {
        con_print("vhdx: %s: the ESP refuses writes (%s), though the firmware does not say "
                  "it is write-protected: mounting read-only\n", disk->path,
                  efi_status_text(status));
        return false;
    }
    return true;
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

    con_size_text(size, sizeof size, info->virtual_size);
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

/* The file is mounted already (registry.c): name that mount, and what happens now. */
static void report_mounted(const struct disk_set *set, const struct mounted_disk *disk,
                           const struct disk_tag *tag)
{
    char owner[CONFIG_PATH_MAX];

    registry_owner_name(tag, owner, sizeof owner);
    con_print("vhdx: %s: already mounted as %s (%s, by %s): %s\n", disk->path, tag->path,
              tag->flags & DISK_TAG_WRITABLE ? "writable" : "read-only", owner,
              set->uses_mounted ? "using that disk" : "not mounted a second time");
}

static EFI_STATUS disk_mount(struct disk_set *set, const struct config *config,
                             const struct config_disk *entry, struct mounted_disk **out)
{
    struct mounted_disk *disk;
    const struct disk_tag *tag;
    EFI_HANDLE twin;
    struct vhdx_diag diag;
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
    disk->device_path = disk_device_path(set->esp.device_path, disk->path);
    if (!disk->device_path) {
        con_print("vhdx: %s: out of memory\n", disk->path);
        goto err_device_path;
    }
    if (!map_file(set, disk))
        goto err_map;
    tag = registry_find(set->esp.handle, disk->file.entry_offset, disk->file.first_cluster,
                        &twin);
    if (tag) {
        report_mounted(set, disk, tag);
        status = EFI_ALREADY_STARTED;
        goto err_mounted;
    }
    /* A disk with this path but no tag: mounted by an older program of ours. */
    if (disk_device_path_taken(disk->device_path)) {
        con_print("vhdx: %s: already mounted\n", disk->path);
        status = EFI_ALREADY_STARTED;
        goto err_taken;
    }
    writable = !entry->read_only && medium_writable(set, disk);
    room_request(config, entry, disk);
    if (writable) {
        switch (make_room(set, disk)) {
        case ROOM_NO_IMAGE:
            goto err_room;
        case ROOM_SHORT:
            writable = false;
            break;
        case ROOM_ENOUGH:
            break;
        }
    }
    if (writable) {
        status = guard_set(set, disk);
        if (status != EFI_SUCCESS) {
            con_print("vhdx: %s: cannot mark the file read-only on the ESP, which keeps it "
                      "from being deleted while mounted (%s): mounting read-only\n",
                      disk->path, efi_status_text(status));
            writable = false;
        }
        status = EFI_LOAD_ERROR;
    }

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
    *out = disk;
    return EFI_SUCCESS;

err_install:
err_type:
    vhdx_close(disk->vhdx, NULL);
err_open:
    if (disk->guarded)
        guard_clear(set, disk);
err_room:
err_taken:
err_mounted:
    efi_esp_unmap(&disk->file);
err_map:
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

EFI_HANDLE disk_set_find(struct disk_set *set, const char *path, const struct disk_tag **tag)
{
    struct fat_file found;
    const char *detail;
    EFI_HANDLE handle = NULL;

    *tag = NULL;
    if (efi_esp_lookup(&set->esp, path, &found, &detail) != FAT_OK)
        return NULL;
    *tag = registry_find(set->esp.handle, found.entry_offset, found.first_cluster, &handle);
    return *tag ? handle : NULL;
}

/* --- taking disks away ---------------------------------------------------------------- */

/* Clear the read-only attribute guard_set put on a disk's file, saying so if it fails. */
static void unguard(struct disk_set *set, struct mounted_disk *disk)
{
    EFI_STATUS status;

    if (!disk->guarded)
        return;
    status = guard_clear(set, disk);
    if (status != EFI_SUCCESS)
        con_print("vhdx: %s: cannot clear the read-only mark set at mount (%s): the next "
                  "mount clears it\n", disk->path, efi_status_text(status));
}

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
        unguard(set, disk);
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
        rc = vhdx_close(disk->vhdx, &diag);
        disk->vhdx = NULL;
        if (boot_services_gone) {
            guard_clear_at_exit(set, disk);
            continue;           /* no console either */
        }
        if (rc != VHDX_OK)
            print_diag(disk->path, "closing: ", &diag);
        else if (disk->verbose)
            con_print("vhdx: %s: closed\n", disk->path);
        unguard(set, disk);
    }
}

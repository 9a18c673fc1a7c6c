/*
 * disk.h - mounting .vhdx files of the EFI System Partition as block devices.
 *
 * The reusable half of the driver: a boot program links this module (with config.c,
 * blockio.c, shutdown.c, the core, platform/fat.c and platform/efi_esp.c) to mount its
 * disk the same way: disk_set_init, disk_set_configure, disk_set_watch, disk_set_mount.
 * Order for one disk (disk_mount):
 *
 *   1. map the file's clusters on the ESP (platform/efi_esp.c, no EFI_FILE_PROTOCOL);
 *   2. writable disks: open the image read-only to learn where its allocated data ends
 *      (a dirty log is replayed in memory only), close it; if some block may still be
 *      allocated and the file has less than the reserve of free room past that end,
 *      extend it through EFI_FILE_PROTOCOL (SetInfo, Flush, Close: the firmware FAT
 *      driver zero-fills it) and map again;
 *   3. open the image for real: writable (a dirty log is replayed in place) or
 *      read-only (`ro`, a read-only file, or a write-protected ESP: replay in memory);
 *   4. install Block I/O and a device path on a new handle and connect it, so the
 *      firmware's partition and FAT drivers bind.
 *
 * The reserve: room for new blocks (dynamic disks, and "fixed" ones with blocks not
 * present, as QEMU makes them), since the file cannot grow while it serves block
 * requests.  Default DISK_DEFAULT_RESERVE (64 MiB), `reserve=` per disk or globally;
 * always rounded up to whole VHDX blocks; 0 turns it off.  The file grows
 * only when the free room past the allocated data is smaller than the reserve, so it
 * does not grow at every boot.  When the room runs out, a write that needs a new block
 * fails with EFI_VOLUME_FULL and nothing else changes.
 *
 * Device path of a disk: the ESP partition's device path, then a vendor-defined media
 * node (DISK_VENDOR_GUID) whose data is the file's canonical path on the ESP in UCS-2,
 * ASCII letters upper-cased (FAT names are case-insensitive), NUL-terminated:
 *     ...\HD(1,GPT,...)\VenMedia(F48A41DA-B293-41D6-B8D3-75E0ABBABA16,5C00440049...)
 * Unique per file, the same at every boot and whichever config line order, and a second
 * mount of the same file (another line, another driver instance) is refused.
 */
#ifndef VHDX_EFI_DISK_H
#define VHDX_EFI_DISK_H

#include "config.h"
#include "efi_esp.h"
#include "system.h"
#include "vhdx.h"

#define DISK_DEFAULT_RESERVE (64ull << 20)

#define DISK_VENDOR_GUID \
    { 0xf48a41da, 0xb293, 0x41d6, { 0xb8, 0xd3, 0x75, 0xe0, 0xab, 0xba, 0xba, 0x16 } }

/* One mounted .vhdx: the private struct around its Block I/O protocol instance. */
struct mounted_disk {
    struct mounted_disk *next;
    char path[CONFIG_PATH_MAX];     /* canonical path on the ESP, for messages */
    struct efi_esp_file file;       /* the platform backend's state */
    struct vhdx_platform platform;
    struct vhdx_disk *vhdx;
    struct vhdx_info info;
    bool writable;
    bool verbose;

    EFI_HANDLE handle;
    EFI_DEVICE_PATH *device_path;   /* pool memory */
    EFI_BLOCK_IO_PROTOCOL block_io;
    EFI_BLOCK_IO_MEDIA media;
    bool esp_opened;                /* ESP protocols opened BY_CHILD_CONTROLLER */

    bool stopped;                   /* closed at reset or ExitBootServices: refuse I/O */
    unsigned errors_shown;          /* I/O errors printed (bounded) */
    bool full_shown;                /* "reserve used up" printed */
};

/* Everything mounted from one ESP by one driver (or boot program) instance. */
struct disk_set {
    struct efi_esp esp;
    EFI_SIMPLE_FILE_SYSTEM_PROTOCOL *file_system;   /* for vhdx.cfg and extending files */
    char directory[CONFIG_PATH_MAX];        /* where the image was loaded from */
    /* A boot program sets these after disk_set_init; the driver leaves them alone. */
    const char *config_name;                /* the file beside the image; NULL: vhdx.cfg */
    bool takes_loader;                      /* loader= is used (else: reported, ignored) */
    char config_source[CONFIG_PATH_MAX];    /* "LoadOptions" or the file, for messages */
    bool verbose;
    struct mounted_disk *disks;
    unsigned count;

    /* shutdown.c */
    EFI_EVENT before_exit_event;            /* NULL: the firmware lacks the group */
    EFI_EVENT exit_event;
    void *reset_notification;               /* NULL: not registered */
};

/*
 * Find the ESP (the device `image` was loaded from) and the directory of its file.
 * Prints why on failure.
 */
EFI_STATUS disk_set_init(struct disk_set *set, EFI_HANDLE image);

/*
 * Read the configuration: LoadOptions when there are any (`options`, `size` bytes),
 * else the file vhdx.cfg (or set->config_name) in the image's directory.  Problems are
 * printed, naming the source (kept in set->config_source); `config` holds whatever
 * lines were good.  Fails only when there is no usable text at all.
 */
EFI_STATUS disk_set_configure(struct disk_set *set, struct config *config,
                              const void *options, size_t size);

/* Mount every disk of `config`; failures are printed and skipped.  Returns the count. */
unsigned disk_set_mount(struct disk_set *set, const struct config *config);

/*
 * Take every disk away: disconnect the drivers above it, uninstall its protocols, close
 * the image, free.  Stops at the first disk that cannot be uninstalled (still in use).
 */
EFI_STATUS disk_set_unmount(struct disk_set *set);

/*
 * The platform is going away (reset, ExitBootServices): close every image so the files
 * are clean and consistent, and refuse all further I/O.  Nothing is uninstalled.
 * With `boot_services_gone` no memory is allocated or freed (a flush that would need
 * memory is skipped; the file stays consistent through its log).
 */
void disk_set_shutdown(struct disk_set *set, bool boot_services_gone);

/* --- shutdown.c -------------------------------------------------------------------- */

/*
 * Call disk_set_shutdown when the platform goes away: at ResetSystem (reset
 * notification), at the "before ExitBootServices" event group and at ExitBootServices.
 * One watched set per image (the reset notification carries no context).  Unwatch
 * before freeing the set.
 */
EFI_STATUS disk_set_watch(struct disk_set *set);
void disk_set_unwatch(struct disk_set *set);

/* --- blockio.c --------------------------------------------------------------------- */

/* The device path above, in pool memory; NULL when out of memory. */
EFI_DEVICE_PATH *disk_device_path(const EFI_DEVICE_PATH *esp_path, const char *path);

/* Is there already a handle with exactly this device path? */
bool disk_device_path_taken(EFI_DEVICE_PATH *device_path);

/* Fill the Block I/O instance from disk->info, install it, connect drivers to it. */
EFI_STATUS blockio_install(struct mounted_disk *disk, const struct efi_esp *esp);

/* Disconnect and uninstall (fails, with everything in place, while still in use). */
EFI_STATUS blockio_uninstall(struct mounted_disk *disk, const struct efi_esp *esp);

#endif

/*
 * disk.h - mounting .vhdx files of the EFI System Partition as block devices.
 *
 * The reusable half of the driver: a boot program links this module (with config.c,
 * blockio.c, shutdown.c, the core, platform/fat.c and platform/efi_esp.c) to mount its
 * disk the same way: disk_set_init, disk_set_configure, disk_set_watch, disk_set_mount.
 * Order for one disk (disk_mount):
 *
 *   1. map the file's clusters on the ESP (platform/efi_esp.c, no EFI_FILE_PROTOCOL);
 *   2. refuse a file that is already mounted, by this program or any other of ours, by
 *      what it is on the ESP, not by its name (registry.c);
 *   3. writable disks only: find out whether they can stay writable, each step
 *      falling back to a read-only mount with a message that says why:
 *        - the FAT read-only attribute (unless an earlier mount of ours left it,
 *          guard.c), a write-protected ESP, and one sector of the file written back
 *          unchanged (a medium the firmware calls writable may refuse every write);
 *        - room for new blocks (below): open the image read-only to learn where its
 *          allocated data ends (a dirty log is replayed in memory only), close it, and
 *          extend the file through EFI_FILE_PROTOCOL (SetInfo, Flush, Close: the
 *          firmware FAT driver zero-fills it) when the room is short, then map again;
 *        - set the read-only attribute for as long as the disk is mounted, so that the
 *          firmware's FAT driver refuses to delete, rename or truncate it (guard.c);
 *   4. open the image for real: writable (a dirty log is replayed in place) or
 *      read-only (replay in memory);
 *   5. install Block I/O, a device path and the registry tag on a new handle and
 *      connect it, so the firmware's partition and FAT drivers bind.
 *
 * Room for new blocks (dynamic disks, and "fixed" ones with blocks not present, as
 * QEMU makes them): the file cannot grow while it serves block requests, so it grows
 * at mount.  `reserve=` (per disk or global, default DISK_DEFAULT_RESERVE = 64 MiB,
 * rounded up to whole VHDX blocks, never more than the blocks still to allocate) is
 * the room a writable mount must have: the file grows only when its room is smaller,
 * by exactly what is missing, and when the ESP cannot give that much the disk mounts
 * read-only, untouched (an inner file system that runs out of room in the middle of an
 * operation is left damaged, which a writable mount must not risk by surprise).
 * `reserve=0` accepts a disk that cannot grow: it mounts writable with whatever room
 * the file has.  `expand` asks for room for every block (what Windows' native VHDX
 * boot does), and mounts read-only when the ESP or FAT's 4 GiB - 1 limit cannot hold
 * it.  When the room runs out while mounted, a write that needs a new block fails with
 * EFI_VOLUME_FULL (the image stays consistent; the file system inside may not).
 *
 * Device path of a disk: the ESP partition's device path, then a vendor-defined media
 * node (DISK_VENDOR_GUID) whose data is the file's canonical path on the ESP in UCS-2,
 * ASCII letters upper-cased (FAT names are case-insensitive), NUL-terminated:
 *     ...\HD(1,GPT,...)\VenMedia(F48A41DA-B293-41D6-B8D3-75E0ABBABA16,5C00440049...)
 * The same at every boot and whichever config line order: boot options can name it.
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

/*
 * The registry tag (registry.c): a protocol of ours on every mounted disk's handle,
 * read by every program of ours in the same boot, whatever its version: fields are only
 * ever added at the end, with a new revision.
 */
#define DISK_TAG_GUID \
    { 0x21a6e191, 0xfe35, 0x4265, { 0x83, 0x72, 0x0c, 0x93, 0x51, 0x1d, 0x8d, 0xd5 } }
#define DISK_TAG_REVISION 1
#define DISK_TAG_WRITABLE 1u

struct disk_tag {
    UINT32 revision;
    UINT32 flags;                   /* DISK_TAG_WRITABLE */
    EFI_HANDLE esp;                 /* the ESP partition's handle */
    UINT64 entry_offset;            /* of the file's 8.3 directory entry on the ESP */
    UINT32 first_cluster;
    UINT32 reserved;
    EFI_HANDLE owner;               /* the image that mounted it */
    char path[CONFIG_PATH_MAX];     /* its canonical path as that image was told it */
};

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

    /* Room for new blocks, for the message when it runs out. */
    uint64_t reserve;               /* what the configuration asked for (0: none) */
    bool expand;                    /* `expand`: room for every block */
    uint64_t room;                  /* bytes past the allocated data at mount */

    bool guarded;                   /* we set the read-only attribute (guard.c) */
    void *guard_block;              /* pool memory for clearing it at ExitBootServices */

    EFI_HANDLE handle;
    EFI_DEVICE_PATH *device_path;   /* pool memory */
    EFI_BLOCK_IO_PROTOCOL block_io;
    EFI_BLOCK_IO_MEDIA media;
    struct disk_tag tag;            /* installed on `handle` too */
    bool esp_opened;                /* ESP protocols opened BY_CHILD_CONTROLLER */

    bool stopped;                   /* closed at reset or ExitBootServices: refuse I/O */
    unsigned errors_shown;          /* I/O errors printed (bounded) */
    bool full_shown;                /* "room used up" printed */
};

/* Everything mounted from one ESP by one driver (or boot program) instance. */
struct disk_set {
    struct efi_esp esp;
    EFI_SIMPLE_FILE_SYSTEM_PROTOCOL *file_system;   /* for vhdx.cfg and extending files */
    char directory[CONFIG_PATH_MAX];        /* where the image was loaded from */
    /* A boot program sets these after disk_set_init; the driver leaves them alone. */
    const char *config_name;                /* the file beside the image; NULL: vhdx.cfg */
    bool takes_loader;                      /* loader= is used (else: reported, ignored) */
    bool uses_mounted;                      /* a file mounted elsewhere is used, not refused */
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

/*
 * Mount every disk of `config`; failures are printed and skipped.  Returns the count.
 * A file already mounted (by this set or any other program of ours) is not mounted
 * again: the message names the first mount, and says the disk is used as it is when
 * set->uses_mounted.
 */
unsigned disk_set_mount(struct disk_set *set, const struct config *config);

/*
 * The handle of the mounted disk that serves the file `path` (canonical) of the set's
 * ESP, whoever mounted it, and its tag; NULL when that file is not mounted.
 */
EFI_HANDLE disk_set_find(struct disk_set *set, const char *path, const struct disk_tag **tag);

/* Open a file of the set's ESP by its UTF-8 path through the firmware's FAT driver. */
EFI_STATUS disk_open_file(struct disk_set *set, const char *path, UINT64 mode,
                          EFI_FILE_PROTOCOL **root, EFI_FILE_PROTOCOL **file);

/* What disk_change_file changes: the size, and attribute bits (EFI_FILE_READ_ONLY...). */
struct file_change {
    bool resize;
    uint64_t size;
    uint64_t set_attributes;
    uint64_t clear_attributes;
};

/* Change a file of the set's ESP through the firmware's FAT driver, durably. */
EFI_STATUS disk_change_file(struct disk_set *set, const char *path,
                            const struct file_change *change);

/*
 * Take every disk away: disconnect the drivers above it, uninstall its protocols, close
 * the image, free.  Stops at the first disk that cannot be uninstalled (still in use).
 */
EFI_STATUS disk_set_unmount(struct disk_set *set);

/*
 * The platform is going away (reset, ExitBootServices): close every image so the files
 * are clean and consistent, clear the read-only attributes we set, and refuse all
 * further I/O.  Nothing is uninstalled.  With `boot_services_gone` no memory is
 * allocated or freed (a flush that would need memory is skipped; the file stays
 * consistent through its log) and the attributes stay (guard.c: the next mount knows).
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

/* --- registry.c -------------------------------------------------------------------- */

/* Fill disk->tag (after the image is open: it records whether the disk is writable). */
void registry_tag(struct mounted_disk *disk, const struct efi_esp *esp);

/*
 * The tag of a mounted disk holding the file with this directory entry or first
 * cluster on the ESP `esp`, and its handle; NULL when there is none.
 */
const struct disk_tag *registry_find(EFI_HANDLE esp, uint64_t entry_offset,
                                     uint32_t first_cluster, EFI_HANDLE *handle);

/* "\EFI\vhdx\vhdx.efi": the file the tag's owner was loaded from, for messages. */
void registry_owner_name(const struct disk_tag *tag, char *out, size_t size);

extern EFI_GUID disk_tag_guid;

/* --- guard.c ----------------------------------------------------------------------- */

/*
 * Is the read-only attribute of the mapped file one that an earlier mount of ours set
 * and could not clear (the machine stopped while the disk was mounted)?
 */
bool guard_left_behind(struct disk_set *set, const struct mounted_disk *disk);

/* Set the read-only attribute for the time the disk is mounted (disk->guarded). */
EFI_STATUS guard_set(struct disk_set *set, struct mounted_disk *disk);

/* Clear the attribute guard_set or an earlier mount set; forget the crash mark. */
EFI_STATUS guard_clear(struct disk_set *set, struct mounted_disk *disk);

/*
 * The same once ExitBootServices has begun, when the FAT driver may not be called and
 * no memory be allocated: the attribute byte is cleared in the file's directory entry
 * through the ESP's Block I/O, then the record is deleted.
 */
void guard_clear_at_exit(struct disk_set *set, struct mounted_disk *disk);

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

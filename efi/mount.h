/*
 * mount.h - mounting .vhdx files of the EFI System Partition as disks.
 *
 * The reusable half of the driver: a boot program links this module (with config.c,
 * the core, platform/fat.c and platform/efi_esp.c) to mount its disks the same way:
 * disk_set_init, disk_set_configure, disk_set_watch, disk_set_mount.
 *
 * Where things are:
 *   configure.c   where the disk list comes from: LoadOptions, or vhdx.cfg beside us;
 *   snapshot.c    `snapshot`: a throw-away child made on top of the disk, mounted instead;
 *   diskset.c     the set's lifecycle: init, mount each disk through the stages below,
 *                 find, unmount, shutdown; the one place a disk is taken apart;
 *   and one file per stage of mounting one disk, each with its undo:
 *
 *   1. map.c      map the file's clusters on the ESP (platform/efi_esp.c, never
 *                 EFI_FILE_PROTOCOL while served); refuse a file that is already
 *                 mounted, by this program or any other of ours, by what it is on the
 *                 ESP, not by its name (registry.c); for a disk asked writable, check
 *                 the medium (the FAT read-only attribute, unless an earlier mount of
 *                 ours left it (guard.c); a write-protected ESP; one sector of the file
 *                 written back unchanged): each check that fails makes the mount
 *                 read-only with a line that says why;
 *   2. open.c     open the image once: writable (a dirty log replayed in place) or
 *                 read-only (replayed in memory; a `ram` disk always); a differencing
 *                 child opens its parents through the platform, each mapped read-only;
 *   3. room.c     writable disks: the room for new blocks (below), from the open
 *                 image's figures, made by vhdx_reserve while the file is still
 *                 growable (the platform extends it through EFI_FILE_PROTOCOL); a room
 *                 that cannot be made serves the disk read-only, the file untouched;
 *      guard.c    writable disks: the read-only attribute for as long as the disk is
 *                 mounted, so the firmware's FAT driver refuses to delete it;
 *   4. publish, one of:
 *      blockio.c  Block I/O, a device path and the registry tag on a new handle,
 *                 connected so the firmware's partition and FAT drivers bind;
 *      ramdisk.c  `ram`: the virtual disk copied into reserved memory and the image
 *                 closed; registered with the firmware's EFI_RAM_DISK_PROTOCOL (which
 *                 publishes an ACPI NFIT the OS finds), or, without it, our own Block
 *                 I/O over the memory and our own NFIT and SSDT (acpi.c).
 *
 *   5. handoff.c  Block I/O disks: a volatile EFI variable that tells the OS which file
 *                 the disk is, so it can serve the same file after ExitBootServices
 *                 (`vhdx attach --firmware`); renewed after the first write and once the
 *                 image is closed at the "before ExitBootServices" event; withdrawn when
 *                 the disk is taken away.  A RAM disk needs none: the OS finds the memory.
 *
 * Room for new blocks (dynamic disks, and "fixed" ones with blocks not present, as
 * QEMU makes them): the file cannot grow while it serves block requests, so it grows
 * at mount.  `reserve=` (per disk or global, default DISK_DEFAULT_RESERVE = 64 MiB,
 * rounded up to whole VHDX blocks, never more than the blocks still to allocate) is
 * the room a writable mount must have: the file grows only when its room is smaller,
 * by exactly what is missing, and when the ESP cannot give that much the disk is served
 * read-only and the file is not grown (an inner file system that runs out of room in the
 * middle of an operation is left damaged, which a writable mount must not risk by
 * surprise).  `reserve=0` accepts a disk that cannot grow: it mounts writable with
 * whatever room the file has.  `expand` asks for room for every block (what Windows'
 * native VHDX boot does), and mounts read-only when the ESP or FAT's 4 GiB - 1 limit
 * cannot hold it.  When the room runs out while mounted, a write that needs a new block
 * fails with EFI_VOLUME_FULL (the image stays consistent; the file system inside may
 * not).
 *
 * Device path of a disk: the ESP partition's device path, then a vendor-defined media
 * node (DISK_VENDOR_GUID) whose data is the file's canonical path on the ESP in UCS-2,
 * ASCII letters upper-cased (FAT names are case-insensitive), NUL-terminated:
 *     ...\HD(1,GPT,...)\VenMedia(F48A41DA-B293-41D6-B8D3-75E0ABBABA16,5C00440049...)
 * The same at every boot and whichever config line order: boot options can name it.
 * A RAM disk's path is that path followed by a RamDisk() node (UEFI 2.10 section
 * 10.3.5.10), whether the firmware's driver or ours serves it.
 */
#ifndef VHDX_EFI_MOUNT_H
#define VHDX_EFI_MOUNT_H

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
#define DISK_TAG_REVISION 2
#define DISK_TAG_WRITABLE 1u
#define DISK_TAG_RAM      2u        /* a copy in memory: the file is no longer used */
/* Revision 2: the parents of a differencing chain, read-only while the child is used. */
#define DISK_TAG_MAX_PARENTS 16

struct disk_tag_file {
    UINT64 entry_offset;            /* of the file's 8.3 directory entry on the ESP */
    UINT32 first_cluster;
    UINT32 reserved;
};

struct disk_tag {
    UINT32 revision;
    UINT32 flags;                   /* DISK_TAG_* */
    EFI_HANDLE esp;                 /* the ESP partition's handle */
    UINT64 entry_offset;            /* of the file's 8.3 directory entry on the ESP */
    UINT32 first_cluster;
    UINT32 reserved;
    EFI_HANDLE owner;               /* the image that mounted it */
    char path[CONFIG_PATH_MAX];     /* its canonical path as that image was told it */
    /* Revision 2. */
    UINT32 parent_count;            /* recorded below (at most DISK_TAG_MAX_PARENTS) */
    UINT32 reserved2;
    struct disk_tag_file parents[DISK_TAG_MAX_PARENTS];
};

/* A disk copied into memory (ramdisk.c). */
struct ram_disk {
    EFI_PHYSICAL_ADDRESS base;      /* EfiReservedMemoryType pages; 0: not a RAM disk */
    UINTN pages;
    uint64_t size;                  /* bytes: the virtual disk's size */
    bool own;                       /* our Block I/O and ACPI tables, not the firmware's */
    EFI_HANDLE firmware_handle;     /* the firmware RAM disk driver's handle (our tag) */
    EFI_DEVICE_PATH *firmware_path; /* its device path (pool memory, from Register) */
    UINTN nfit_key, ssdt_key;       /* own tables: the ACPI table protocol's keys */
    bool nfit_installed, ssdt_installed;
};

/* One mounted .vhdx: the private struct around its Block I/O protocol instance. */
struct mounted_disk {
    struct mounted_disk *next;

    /* What the configuration asks (diskset.c). */
    char path[CONFIG_PATH_MAX];     /* canonical path on the ESP, for messages */
    unsigned line;                  /* of its image= line */
    bool want_writable;             /* no `ro` (and not `ram`) */
    bool verbose;
    bool ram;                       /* `ram`: copied into memory */
    bool own_tables;                /* `own_nfit`: never the firmware's RAM disk driver */
    bool snapshot;                  /* `snapshot`: a throw-away child on top (snapshot.c) */
    char snapshot_of[CONFIG_PATH_MAX];  /* the image named; `path` is then the child */
    uint64_t reserve;               /* the room asked for (0: none) */
    bool expand;                    /* `expand`: room for every block */

    /* 1. map.c */
    struct efi_esp_file file;       /* the platform backend's state */
    struct vhdx_platform platform;
    bool medium_writable;           /* the checks on the medium passed */

    /* 2. open.c */
    struct vhdx_disk *vhdx;
    struct vhdx_info info;
    bool writable;                  /* served writable (the core takes writes) */
    uint64_t open_ms;               /* how long the open took (verbose) */

    /* 3. room.c */
    uint64_t room;                  /* bytes past the allocated data at mount */

    /* guard.c */
    bool guarded;                   /* we set the read-only attribute */
    void *guard_block;              /* pool memory for clearing it at ExitBootServices */

    /* 4. blockio.c */
    EFI_HANDLE handle;              /* our Block I/O's handle (NULL: none) */
    EFI_DEVICE_PATH *device_path;   /* pool memory */
    EFI_BLOCK_IO_PROTOCOL block_io;
    EFI_BLOCK_IO_MEDIA media;
    struct disk_tag tag;            /* installed on the handle that serves the disk */
    bool esp_opened;                /* ESP protocols opened BY_CHILD_CONTROLLER */
    bool stopped;                   /* closed at reset or ExitBootServices: refuse I/O */
    unsigned errors_shown;          /* I/O errors printed (bounded) */
    bool full_shown;                /* "room used up" printed */

    /* 4. ramdisk.c */
    struct ram_disk ram_disk;

    /* 5. handoff.c */
    struct handoff *handoff;        /* pool memory; NULL: not handed to the OS */
};

/* Everything mounted from one ESP by one driver (or boot program) instance. */
struct disk_set {
    struct efi_esp esp;
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

/* --- diskset.c: the set ---------------------------------------------------------------- */

/*
 * Find the ESP (the device `image` was loaded from) and the directory of its file.
 * Prints why on failure.
 */
EFI_STATUS disk_set_init(struct disk_set *set, EFI_HANDLE image);

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

/*
 * Take every disk away: disconnect the drivers above it, uninstall its protocols, close
 * the image, free.  Stops at the first disk that cannot be uninstalled (still in use).
 */
EFI_STATUS disk_set_unmount(struct disk_set *set);

/*
 * The platform is going away (reset, ExitBootServices): close every image so the files
 * are clean and consistent, clear the read-only attributes we set, and refuse all
 * further I/O.  Nothing is uninstalled (RAM disks stay: the OS finds them).  With
 * `boot_services_gone` no memory is allocated or freed (a flush that would need memory is
 * skipped; the file stays consistent through its log) and the attributes are cleared
 * through the ESP's Block I/O (guard.c).
 */
void disk_set_shutdown(struct disk_set *set, bool boot_services_gone);

/* "vhdx: PATH: DOING<the diagnosis>" on the console. */
void disk_print_diag(const char *path, const char *doing, const struct vhdx_diag *diag);

/* --- configure.c ------------------------------------------------------------------------ */

/*
 * Read the configuration: LoadOptions when there are any (`options`, `size` bytes),
 * else the file vhdx.cfg (or set->config_name) in the image's directory.  Problems are
 * printed, naming the source (kept in set->config_source); `config` holds whatever
 * lines were good.  Fails only when there is no usable text at all.
 */
EFI_STATUS disk_set_configure(struct disk_set *set, struct config *config,
                              const void *options, size_t size);

/* --- snapshot.c ------------------------------------------------------------------------ */

/*
 * `snapshot`, before stage 1: make a throw-away differencing child of disk->path beside
 * it (deleting the last one) and mount that instead (disk->path becomes the child's,
 * disk->snapshot_of keeps the image named).  Says why on failure.
 */
EFI_STATUS make_snapshot(struct disk_set *set, struct mounted_disk *disk);

/* --- 1. map.c --------------------------------------------------------------------------- */

/*
 * Map disk->path, refuse it when it is mounted already (EFI_ALREADY_STARTED), and for
 * a disk that wants to be writable, decide disk->medium_writable.  Says why on failure.
 */
EFI_STATUS map_disk(struct disk_set *set, struct mounted_disk *disk);
void unmap_disk(struct mounted_disk *disk);

/* --- 2. open.c -------------------------------------------------------------------------- */

/* Open the image (writable when disk->want_writable and the medium allows). */
EFI_STATUS open_disk(struct disk_set *set, struct mounted_disk *disk);

/*
 * Close the image (and its parents), saying why if that fails; true when it closed
 * clean (its log empty).  With `boot_services_gone` nothing is printed or freed.
 */
bool close_disk(struct mounted_disk *disk, bool boot_services_gone);

/* The line that says what was mounted, and how (plus the chain and, verbose, detail). */
void print_disk(const struct mounted_disk *disk);

/* --- 3. room.c -------------------------------------------------------------------------- */

/*
 * A writable disk's room for new blocks (above).  When it cannot be made, the disk is
 * served read-only (disk->writable false), saying why; the file was not grown.
 */
void make_room(struct disk_set *set, struct mounted_disk *disk);

/* --- registry.c ------------------------------------------------------------------------- */

/* Fill disk->tag (after the image is open: it records whether the disk is writable). */
void registry_tag(struct mounted_disk *disk, const struct efi_esp *esp);

/*
 * The tag of a mounted disk holding the file with this directory entry or first
 * cluster on the ESP `esp` (as the disk itself or, with `parent`, as a parent of its
 * chain), and its handle; NULL when there is none.
 */
const struct disk_tag *registry_find(EFI_HANDLE esp, uint64_t entry_offset,
                                     uint32_t first_cluster, EFI_HANDLE *handle,
                                     bool *parent);

/* "\EFI\vhdx\vhdx.efi": the file the tag's owner was loaded from, for messages. */
void registry_owner_name(const struct disk_tag *tag, char *out, size_t size);

extern EFI_GUID disk_tag_guid;

/* --- guard.c ---------------------------------------------------------------------------- */

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

/* --- 4. blockio.c ----------------------------------------------------------------------- */

/* The device path above, in pool memory; NULL when out of memory. */
EFI_DEVICE_PATH *disk_device_path(const EFI_DEVICE_PATH *esp_path, const char *path);

/* Is there already a handle with exactly this device path? */
bool disk_device_path_taken(EFI_DEVICE_PATH *device_path);

/*
 * Fill the Block I/O instance (from disk->info; over disk->ram_disk's memory when it
 * has some), install it with disk->device_path and the tag, connect drivers to it.
 */
EFI_STATUS blockio_install(struct mounted_disk *disk, const struct efi_esp *esp);

/* Disconnect and uninstall (fails, with everything in place, while still in use). */
EFI_STATUS blockio_uninstall(struct mounted_disk *disk, const struct efi_esp *esp);

/* --- 4. ramdisk.c ----------------------------------------------------------------------- */

/*
 * Copy the open image into reserved memory (progress shown), close it, and publish the
 * memory as a RAM disk the firmware and the OS see.  Says why on failure (the image is
 * then still open, for close_disk).
 */
EFI_STATUS ramdisk_publish(struct disk_set *set, struct mounted_disk *disk);

/* Take the RAM disk away (fails, with everything in place, while still in use). */
EFI_STATUS ramdisk_unpublish(struct mounted_disk *disk, const struct efi_esp *esp);

/* --- acpi.c ----------------------------------------------------------------------------- */

/*
 * Publish an NFIT with one virtual-disk SPA range over the RAM disk, and the SSDT of
 * the NVDIMM root device (ACPI0012) the OS's NFIT driver binds to, through
 * EFI_ACPI_TABLE_PROTOCOL.  Refused when the firmware has an NFIT of its own.
 */
EFI_STATUS acpi_publish_ram_disk(struct ram_disk *ram, const char **why);
void acpi_unpublish_ram_disk(struct ram_disk *ram);

/* --- shutdown.c ------------------------------------------------------------------------- */

/*
 * Call disk_set_shutdown when the platform goes away: at ResetSystem (reset
 * notification), at the "before ExitBootServices" event group and at ExitBootServices.
 * One watched set per image (the reset notification carries no context).  Unwatch
 * before freeing the set.
 */
EFI_STATUS disk_set_watch(struct disk_set *set);
void disk_set_unwatch(struct disk_set *set);

#endif

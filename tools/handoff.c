/*
 * handoff.c - what to attach (firmware record or kernel parameter) and where it is
 * (see handoff.h; the record layout is platform/handoff_format.h).
 */
#include "handoff.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define GPT_ENTRIES_MAX (1u << 20)      /* bytes of partition entries we read at most */

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)le16(p) | (uint32_t)le16(p + 2) << 16;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

void handoff_guid_text(const uint8_t g[16], char text[39])
{
    snprintf(text, 39, "{%08" PRIx32 "-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x}",
             le32(g), le16(g + 4), le16(g + 6), g[8], g[9], g[10], g[11], g[12], g[13],
             g[14], g[15]);
}

/* "5644584A-0001-4000-8000-00000000A001" to on-disk (mixed-endian) bytes. */
static bool parse_guid(const char *text, uint8_t out[16])
{
    static const int field_bytes[] = { 4, 2, 2, 2, 6 };
    uint8_t raw[16];
    int at = 0;

    for (int f = 0; f < 5; f++) {
        for (int b = 0; b < field_bytes[f]; b++) {
            unsigned v;

            if (!isxdigit((unsigned char)text[0]) || !isxdigit((unsigned char)text[1]) ||
                sscanf(text, "%2x", &v) != 1)
                return false;
            raw[at++] = (uint8_t)v;
            text += 2;
        }
        if (f < 4 && *text++ != '-')
            return false;
    }
    if (*text)
        return false;
    /* The first three fields are stored little-endian (GPT, UEFI 2.10 appendix A). */
    out[0] = raw[3]; out[1] = raw[2]; out[2] = raw[1]; out[3] = raw[0];
    out[4] = raw[5]; out[5] = raw[4];
    out[6] = raw[7]; out[7] = raw[6];
    memcpy(out + 8, raw + 8, 8);
    return true;
}

/* A path on the ESP: '\' or '/' separators, from the root, no "..", no control bytes;
 * stored with '/' separators. */
static bool take_path(const char *in, size_t length, char *out, char *why)
{
    if (!length || (in[0] != '/' && in[0] != '\\')) {
        snprintf(why, HANDOFF_WHY_MAX, "the path must start with / or \\");
        return false;
    }
    if (length > VHDX_HANDOFF_PATH_MAX) {
        snprintf(why, HANDOFF_WHY_MAX, "the path is over %d bytes", VHDX_HANDOFF_PATH_MAX);
        return false;
    }
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char)in[i];

        if (c < 0x20 || c == 0x7f) {
            snprintf(why, HANDOFF_WHY_MAX, "the path holds a control character");
            return false;
        }
        out[i] = c == '\\' ? '/' : (char)c;
    }
    out[length] = 0;
    for (const char *p = out; (p = strstr(p, "..")); p += 2) {
        if ((p == out || p[-1] == '/') && (p[2] == 0 || p[2] == '/')) {
            snprintf(why, HANDOFF_WHY_MAX, "the path may not contain '..'");
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------------------------ */
/* The kernel parameter.                                                                 */

int handoff_from_cmdline(const char *cmdline, struct handoff_disk *disk, char *why)
{
    char value[VHDX_HANDOFF_PATH_MAX + 64], token[sizeof value + 5];
    bool found = false;
    const char *p = cmdline;

    /* Tokens as the kernel splits them: blanks outside double quotes; the last
     * vhdx= wins. */
    while (*p) {
        size_t n = 0;
        bool quoted = false;

        while (isspace((unsigned char)*p))
            p++;
        for (; *p && (quoted || !isspace((unsigned char)*p)); p++) {
            if (*p == '"')
                quoted = !quoted;
            else if (n + 1 < sizeof token)
                token[n++] = *p;
        }
        token[n] = 0;
        if (n >= 5 && !memcmp(token, "vhdx=", 5)) {
            memcpy(value, token + 5, n - 5 + 1);
            found = true;
        }
    }
    if (!found)
        return 0;

    memset(disk, 0, sizeof *disk);
    snprintf(disk->source, sizeof disk->source, "kernel parameter vhdx=");
    /* PARTUUID=<36 characters>:<path>[:ro] */
    if (strncmp(value, "PARTUUID=", 9) || strlen(value) < 9 + 36 + 2 || value[9 + 36] != ':') {
        snprintf(why, HANDOFF_WHY_MAX, "vhdx=%.200s: expected vhdx=PARTUUID=<guid>:"
                 "/path/disk.vhdx[:ro]", value);
        return -1;
    }
    value[9 + 36] = 0;
    if (!parse_guid(value + 9, disk->partition_guid)) {
        snprintf(why, HANDOFF_WHY_MAX, "vhdx=: '%.36s' is not a partition GUID", value + 9);
        return -1;
    }
    char *path = value + 9 + 36 + 1;
    size_t length = strlen(path);

    if (length > 3 && !strcmp(path + length - 3, ":ro")) {
        disk->read_only = true;
        length -= 3;
    }
    if (!take_path(path, length, disk->path, why)) {
        char detail[HANDOFF_WHY_MAX];

        snprintf(detail, sizeof detail, "%.300s", why);
        snprintf(why, HANDOFF_WHY_MAX, "vhdx=: %.300s", detail);
        return -1;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------ */
/* The firmware's record.                                                                */

static void take_guid(const uint8_t *p, struct vhdx_guid *guid)
{
    memcpy(guid->bytes, p, 16);
}

/* A path of the record (`length` bytes at `p`): no NUL, then as take_path says. */
static bool take_record_path(const uint8_t *p, size_t length, char *out, char *why)
{
    if (memchr(p, 0, length)) {
        snprintf(why, HANDOFF_WHY_MAX, "the path holds a NUL byte");
        return false;
    }
    return take_path((const char *)p, length, out, why);
}

/* Parent entries from `at` to the end of the record (version 2).  0, or -1 with `why`. */
static int take_parents(const uint8_t *data, size_t size, size_t at,
                        struct handoff_disk *disk, char *why)
{
    for (unsigned i = 0; i < disk->parent_count; i++) {
        struct handoff_parent *p = &disk->parents[i];
        const uint8_t *e = data + at;
        size_t length;

        if (size - at < VHDX_HANDOFF_PARENT_FIXED_SIZE ||
            (length = le16(e + VHDX_HANDOFF_PARENT_PATH_LENGTH)) > VHDX_HANDOFF_PATH_MAX ||
            size - at - VHDX_HANDOFF_PARENT_FIXED_SIZE < length) {
            snprintf(why, HANDOFF_WHY_MAX, "parent %u of %u does not fit in the record's "
                     "%zu bytes", i + 1, disk->parent_count, size);
            return -1;
        }
        if (!take_record_path(e + VHDX_HANDOFF_PARENT_FIXED_SIZE, length, p->path, why)) {
            char detail[HANDOFF_WHY_MAX];

            snprintf(detail, sizeof detail, "%.300s", why);
            snprintf(why, HANDOFF_WHY_MAX, "parent %u: %.290s", i + 1, detail);
            return -1;
        }
        take_guid(e + VHDX_HANDOFF_PARENT_FILE_WRITE, &p->file_write_guid);
        take_guid(e + VHDX_HANDOFF_PARENT_DATA_WRITE, &p->data_write_guid);
        take_guid(e + VHDX_HANDOFF_PARENT_DISK_ID, &p->disk_id);
        p->file_size = le64(e + VHDX_HANDOFF_PARENT_FILE_SIZE);
        at += VHDX_HANDOFF_PARENT_FIXED_SIZE + length;
    }
    if (at != size) {
        snprintf(why, HANDOFF_WHY_MAX, "the record's sizes do not add up (%zu bytes, %zu "
                 "used by the path and %u parents)", size, at, disk->parent_count);
        return -1;
    }
    return 0;
}

int handoff_parse_record(const uint8_t *data, size_t size, struct handoff_disk *disk,
                         char *why)
{
    uint8_t copy[VHDX_HANDOFF_MAX_SIZE];
    uint32_t flags, stored_crc;
    uint16_t version, path_length;

    memset(disk, 0, sizeof *disk);
    if (size < VHDX_HANDOFF_FIXED_SIZE || memcmp(data, VHDX_HANDOFF_MAGIC, 8)) {
        snprintf(why, HANDOFF_WHY_MAX, "not a hand-off record (no \"%s\" signature, or "
                 "shorter than %d bytes)", VHDX_HANDOFF_MAGIC, VHDX_HANDOFF_FIXED_SIZE);
        return -1;
    }
    version = le16(data + VHDX_HANDOFF_OFF_VERSION);
    if (version != VHDX_HANDOFF_VERSION && version != VHDX_HANDOFF_VERSION_CHAIN) {
        snprintf(why, HANDOFF_WHY_MAX, "record version %u; this tool reads versions %d and "
                 "%d", version, VHDX_HANDOFF_VERSION, VHDX_HANDOFF_VERSION_CHAIN);
        return -1;
    }
    path_length = le16(data + VHDX_HANDOFF_OFF_PATH_LENGTH);
    if (size > VHDX_HANDOFF_MAX_SIZE || le16(data + VHDX_HANDOFF_OFF_SIZE) != (uint16_t)size ||
        path_length > VHDX_HANDOFF_PATH_MAX ||
        (size_t)VHDX_HANDOFF_FIXED_SIZE + path_length > size) {
        snprintf(why, HANDOFF_WHY_MAX, "the record's sizes do not add up (%zu bytes, size "
                 "field %u, path %u bytes)", size, le16(data + VHDX_HANDOFF_OFF_SIZE),
                 path_length);
        return -1;
    }
    memcpy(copy, data, size);
    memset(copy + VHDX_HANDOFF_OFF_CRC, 0, 4);
    stored_crc = le32(data + VHDX_HANDOFF_OFF_CRC);
    if (vhdx_crc32c(0, copy, size) != stored_crc) {
        snprintf(why, HANDOFF_WHY_MAX, "bad checksum");
        return -1;
    }
    flags = le32(data + VHDX_HANDOFF_OFF_FLAGS);
    if (flags & ~VHDX_HANDOFF_KNOWN_FLAGS) {
        snprintf(why, HANDOFF_WHY_MAX, "unknown flags 0x%" PRIx32, flags);
        return -1;
    }
    disk->parent_count = le16(data + VHDX_HANDOFF_OFF_PARENTS);
    if ((version == VHDX_HANDOFF_VERSION && disk->parent_count) ||
        disk->parent_count > VHDX_HANDOFF_MAX_PARENTS) {
        snprintf(why, HANDOFF_WHY_MAX, "%u parents in a version %u record (at most %d in "
                 "version %d, none in version %d)", disk->parent_count, version,
                 VHDX_HANDOFF_MAX_PARENTS, VHDX_HANDOFF_VERSION_CHAIN, VHDX_HANDOFF_VERSION);
        return -1;
    }
    if (!take_record_path(data + VHDX_HANDOFF_FIXED_SIZE, path_length, disk->path, why) ||
        take_parents(data, size, VHDX_HANDOFF_FIXED_SIZE + path_length, disk, why))
        return -1;
    disk->read_only = flags & VHDX_HANDOFF_READ_ONLY;
    disk->closed = flags & VHDX_HANDOFF_CLOSED;
    disk->mbr = flags & VHDX_HANDOFF_MBR;
    disk->partition = le32(data + VHDX_HANDOFF_OFF_PARTITION);
    memcpy(disk->partition_guid, data + VHDX_HANDOFF_OFF_PARTITION_ID, 16);
    disk->mbr_signature = le32(data + VHDX_HANDOFF_OFF_PARTITION_ID);
    disk->have_fat_serial = true;
    disk->fat_serial = le32(data + VHDX_HANDOFF_OFF_FAT_SERIAL);
    disk->have_identity = true;
    disk->sector_size = le32(data + VHDX_HANDOFF_OFF_SECTOR_SIZE);
    disk->virtual_size = le64(data + VHDX_HANDOFF_OFF_VIRTUAL_SIZE);
    disk->block_size = le32(data + VHDX_HANDOFF_OFF_BLOCK_SIZE);
    take_guid(data + VHDX_HANDOFF_OFF_DISK_ID, &disk->disk_id);
    take_guid(data + VHDX_HANDOFF_OFF_FILE_WRITE, &disk->file_write_guid);
    take_guid(data + VHDX_HANDOFF_OFF_DATA_WRITE, &disk->data_write_guid);
    take_guid(data + VHDX_HANDOFF_OFF_LOG_GUID, &disk->log_guid);
    if (!disk->partition) {
        snprintf(why, HANDOFF_WHY_MAX, "no partition number");
        return -1;
    }
    return 0;
}

unsigned handoff_from_efivars(const char *directory, struct handoff_disk *disks,
                              unsigned max)
{
    unsigned count = 0;

    for (unsigned i = 0; i < VHDX_HANDOFF_MAX_DISKS && count < max; i++) {
        char name[512], why[HANDOFF_WHY_MAX];
        uint8_t data[4 + VHDX_HANDOFF_MAX_SIZE + 1];
        ssize_t n;
        int fd;

        snprintf(name, sizeof name, "%s/%s%u-%s", directory, VHDX_HANDOFF_NAME, i,
                 VHDX_HANDOFF_GUID_TEXT);
        fd = open(name, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        n = read(fd, data, sizeof data);
        close(fd);
        /* The first 4 bytes of an efivarfs file are the variable's attributes. */
        if (n < 4 || handoff_parse_record(data + 4, (size_t)n - 4, &disks[count], why)) {
            fprintf(stderr, "vhdx: EFI variable %s%u: %s: ignored\n", VHDX_HANDOFF_NAME, i,
                    n < 4 ? "cannot be read" : why);
            continue;
        }
        snprintf(disks[count].source, sizeof disks[count].source, "EFI variable %s%u",
                 VHDX_HANDOFF_NAME, i);
        count++;
    }
    return count;
}

/* ------------------------------------------------------------------------------------ */
/* Finding the ESP.                                                                      */

bool read_first_line(const char *path, char *out, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return false;
    n = read(fd, out, size - 1);
    close(fd);
    if (n < 0)
        return false;
    out[n] = 0;
    out[strcspn(out, "\n")] = 0;
    return true;
}

static bool read_at(const char *device, uint64_t offset, void *buffer, size_t length)
{
    int fd = open(device, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return false;
    n = pread(fd, buffer, length, (off_t)offset);
    close(fd);
    return n == (ssize_t)length;
}

/* The partition number of `guid` in the GPT of `disk` ("vda"), or 0. */
static uint32_t gpt_find(const char *disk, const uint8_t guid[16])
{
    char path[PATH_MAX + 64], text[32], device[PATH_MAX + 8];
    uint8_t header[512], *entries;
    uint64_t lba_size, entries_lba;
    uint32_t count, entry_size, found = 0;

    snprintf(path, sizeof path, "/sys/block/%s/queue/logical_block_size", disk);
    snprintf(device, sizeof device, "/dev/%s", disk);
    if (!read_first_line(path, text, sizeof text) || !(lba_size = strtoull(text, NULL, 10)) ||
        lba_size % 512 || !read_at(device, lba_size, header, sizeof header) ||
        memcmp(header, "EFI PART", 8))
        return 0;
    entries_lba = le64(header + 72);
    count = le32(header + 80);
    entry_size = le32(header + 84);
    if (entry_size < 128 || entry_size > 4096 || !count ||
        (uint64_t)count * entry_size > GPT_ENTRIES_MAX)
        return 0;
    entries = malloc((size_t)count * entry_size);
    if (entries && read_at(device, entries_lba * lba_size, entries, (size_t)count * entry_size)) {
        for (uint32_t i = 0; i < count && !found; i++)
            if (!memcmp(entries + (size_t)i * entry_size + 16, guid, 16))
                found = i + 1;
    }
    free(entries);
    return found;
}

/* Does partition `name` (a /sys/class/block entry with a "partition" file) match? */
static bool partition_matches(const struct handoff_disk *disk, const char *name)
{
    char path[300], text[32], real[PATH_MAX], parent[PATH_MAX];
    uint32_t number;
    char *slash;

    snprintf(path, sizeof path, "/sys/class/block/%s/partition", name);
    if (!read_first_line(path, text, sizeof text))
        return false;
    number = (uint32_t)strtoul(text, NULL, 10);
    if (disk->partition && number != disk->partition)
        return false;
    snprintf(path, sizeof path, "/sys/class/block/%s", name);
    if (!realpath(path, real) || !(slash = strrchr(real, '/')))
        return false;
    *slash = 0;
    slash = strrchr(real, '/');
    snprintf(parent, sizeof parent, "%s", slash ? slash + 1 : real);
    if (!strncmp(parent, "nbd", 3))
        return false;           /* never a disk we serve ourselves */
    if (disk->mbr) {
        uint8_t mbr[512];

        snprintf(path, sizeof path, "/dev/%.250s", parent);
        return read_at(path, 0, mbr, sizeof mbr) && mbr[510] == 0x55 && mbr[511] == 0xaa &&
               le32(mbr + 440) == disk->mbr_signature;
    }
    return gpt_find(parent, disk->partition_guid) == number;
}

static bool find_partition(const struct handoff_disk *disk, char *device, size_t size)
{
    DIR *dir = opendir("/sys/class/block");
    struct dirent *e;
    bool found = false;

    if (!dir)
        return false;
    while (!found && (e = readdir(dir))) {
        if (e->d_name[0] != '.' && partition_matches(disk, e->d_name)) {
            snprintf(device, size, "/dev/%s", e->d_name);
            found = true;
        }
    }
    closedir(dir);
    return found;
}

/* The FAT volume serial of a partition (FAT32 and FAT12/16 boot sectors). */
static bool fat_serial(const char *device, uint32_t *serial)
{
    uint8_t boot[512];

    if (!read_at(device, 0, boot, sizeof boot) || boot[510] != 0x55 || boot[511] != 0xaa)
        return false;
    if (le16(boot + 22) == 0) {                 /* FAT32: BPB_FATSz16 is 0 */
        if (boot[66] != 0x29)
            return false;
        *serial = le32(boot + 67);
    } else {
        if (boot[38] != 0x29)
            return false;
        *serial = le32(boot + 39);
    }
    return true;
}

static int64_t now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int handoff_find_esp(const struct handoff_disk *disk, unsigned wait_ms, char *device,
                     size_t size, char *why)
{
    int64_t deadline = now_ms() + wait_ms;
    char id[48];
    uint32_t serial;

    if (disk->mbr)
        snprintf(id, sizeof id, "MBR signature %08" PRIx32 " partition %" PRIu32,
                 disk->mbr_signature, disk->partition);
    else
        handoff_guid_text(disk->partition_guid, id);
    while (!find_partition(disk, device, size)) {
        if (now_ms() >= deadline) {
            snprintf(why, HANDOFF_WHY_MAX, "no partition %s%s found within %u s", disk->mbr
                     ? "with " : "PARTUUID=", id, wait_ms / 1000);
            return -1;
        }
        usleep(100 * 1000);
    }
    if (disk->have_fat_serial) {
        if (!fat_serial(device, &serial)) {
            snprintf(why, HANDOFF_WHY_MAX, "%s (the ESP %s) has no FAT boot sector", device,
                     id);
            return -1;
        }
        if (serial != disk->fat_serial) {
            snprintf(why, HANDOFF_WHY_MAX, "%s has FAT serial %04" PRIX32 "-%04" PRIX32
                     ", the firmware's ESP had %04" PRIX32 "-%04" PRIX32, device,
                     serial >> 16, serial & 0xffff, disk->fat_serial >> 16,
                     disk->fat_serial & 0xffff);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* The file's identity.                                                                  */

static bool same_guid(const struct vhdx_guid *a, const struct vhdx_guid *b)
{
    return !memcmp(a->bytes, b->bytes, 16);
}

/* "its WHAT is NOW, the firmware SAW THEN" when they differ. */
static bool guid_differs(const char *what, const struct vhdx_guid *now,
                         const struct vhdx_guid *then, const char *saw, char *why)
{
    char a[39], b[39];

    if (same_guid(now, then))
        return false;
    vhdx_guid_format(now, a);
    vhdx_guid_format(then, b);
    snprintf(why, HANDOFF_WHY_MAX, "its %s is %s, the firmware %s %s", what, a, saw, b);
    return true;
}

bool handoff_identity_matches(const struct handoff_disk *disk, const struct vhdx_info *info,
                              char *why)
{
    if (!disk->have_identity)
        return true;
    if (guid_differs("virtual disk ID", &info->virtual_disk_id, &disk->disk_id, "left", why))
        return false;
    if (info->virtual_size != disk->virtual_size ||
        info->logical_sector_size != disk->sector_size) {
        snprintf(why, HANDOFF_WHY_MAX, "it is %" PRIu64 " bytes of %" PRIu32 "-byte sectors, "
                 "the firmware's was %" PRIu64 " bytes of %" PRIu32 "-byte sectors",
                 info->virtual_size, info->logical_sector_size, disk->virtual_size,
                 disk->sector_size);
        return false;
    }
    /* Any other writer renews FileWriteGuid before its first change (spec 2.2.2.1).  A
     * dirty log with the firmware's GUIDs is the firmware's own (its close did not
     * finish): replaying it is the core's job. */
    return !guid_differs("FileWriteGuid", &info->file_write_guid, &disk->file_write_guid,
                         "left", why) &&
           !guid_differs("DataWriteGuid", &info->data_write_guid, &disk->data_write_guid,
                         "left", why);
}

/* A parent is only ever read, by the firmware and by us: any writer renews its
 * FileWriteGuid (spec 2.2.2.1), and the child's parent_linkage names its DataWriteGuid. */
bool handoff_parent_matches(const struct handoff_parent *p, const struct vhdx_info *info,
                            char *why)
{
    if (guid_differs("FileWriteGuid", &info->file_write_guid, &p->file_write_guid, "read",
                     why) ||
        guid_differs("DataWriteGuid", &info->data_write_guid, &p->data_write_guid, "read",
                     why) ||
        guid_differs("virtual disk ID", &info->virtual_disk_id, &p->disk_id, "read", why))
        return false;
    if (info->file_size != p->file_size) {
        snprintf(why, HANDOFF_WHY_MAX, "it is %" PRIu64 " bytes long, the firmware read %"
                 PRIu64, info->file_size, p->file_size);
        return false;
    }
    return true;
}

bool handoff_chain_matches(const struct handoff_disk *d, const struct vhdx_disk *disk,
                           char *why)
{
    const struct vhdx_disk *level = disk;
    struct vhdx_disk *parent;
    unsigned n = 0;

    if (!d->have_identity)
        return true;
    for (; (parent = vhdx_parent(level)); level = parent, n++) {
        struct vhdx_info child, info;
        char detail[HANDOFF_WHY_MAX];

        vhdx_get_info(level, &child);
        vhdx_get_info(parent, &info);
        if (n == d->parent_count) {
            snprintf(why, HANDOFF_WHY_MAX, "its chain here is deeper than the firmware's "
                     "(%u parents): parent %u is '%.200s'", d->parent_count, n + 1,
                     child.parent_path ? child.parent_path : "?");
            return false;
        }
        if (!handoff_parent_matches(&d->parents[n], &info, detail)) {
            snprintf(why, HANDOFF_WHY_MAX, "its parent %u as found here ('%.100s', through "
                     "%s) is not the firmware's %.100s: %.200s", n + 1,
                     child.parent_path ? child.parent_path : "?",
                     child.parent_key ? child.parent_key : "?", d->parents[n].path, detail);
            return false;
        }
    }
    if (n != d->parent_count) {
        snprintf(why, HANDOFF_WHY_MAX, "its chain here has %u parents, the firmware's had %u",
                 n, d->parent_count);
        return false;
    }
    return true;
}

/*
 * create.c - making a new VHDX file (vhdx_create in vhdx.h).
 *
 * The layout Windows and DiscUtils use (digest section 2): the header section, the log
 * at 1 MiB (1 MiB, empty), the metadata region at 2 MiB (1 MiB), the BAT at 3 MiB, and
 * blocks after it.  Both headers and both region-table copies are written, headers last,
 * after a flush, so a crash during creation leaves no file that claims to be a VHDX.
 */
#include "disk.h"

#define LOG_OFFSET        (1ull * MIB)
#define LOG_LENGTH        MIB
#define METADATA_OFFSET   (2ull * MIB)
#define METADATA_LENGTH   MIB
#define BAT_OFFSET        (3ull * MIB)
#define ITEMS_OFFSET      METADATA_TABLE_SIZE

/* Metadata entry flags (spec 2.6.1.2). */
#define FLAG_IS_VIRTUAL_DISK (1u << 1)
#define FLAG_IS_REQUIRED     (1u << 2)

/* The parent locator item (spec 2.6.2.6). */
static int build_locator(struct vhdx_disk *disk, const struct vhdx_create_options *o,
                         uint8_t *item, uint32_t *length)
{
    if (metadata_build_locator(o->locator, o->locator_count, item, METADATA_ITEM_MAX, length))
        return fail(disk, VHDX_E_ARGUMENT, 0, 0,
                    "a parent locator key or value empty, or too long");
    return VHDX_OK;
}

struct item {
    const struct vhdx_guid *guid;
    uint32_t flags;
    uint32_t length;
};

/* The metadata region: table and items (spec 2.6.1, 2.6.2). */
static int build_metadata(struct vhdx_disk *disk, const struct vhdx_create_options *o,
                          uint32_t block_size, uint8_t *region)
{
    struct item items[6];
    uint32_t count = 0, at = ITEMS_OFFSET;
    uint8_t *data = region + ITEMS_OFFSET;
    struct vhdx_guid disk_id;
    int rc;

    rc = file_random_guid(disk, &disk_id);
    if (rc)
        return rc;
    put_le32(data, block_size);
    put_le32(data + 4, (o->fixed ? 1u : 0u) | (o->locator ? 2u : 0u));
    items[count++] = (struct item){ &GUID_FILE_PARAMETERS, FLAG_IS_REQUIRED, 8 };
    put_le64(data + 8, o->virtual_size);
    items[count++] = (struct item){ &GUID_VIRTUAL_DISK_SIZE,
                                         FLAG_IS_VIRTUAL_DISK | FLAG_IS_REQUIRED, 8 };
    mem_copy(data + 16, disk_id.bytes, 16);
    items[count++] = (struct item){ &GUID_VIRTUAL_DISK_ID,
                                         FLAG_IS_VIRTUAL_DISK | FLAG_IS_REQUIRED, 16 };
    put_le32(data + 32, o->logical_sector_size);
    items[count++] = (struct item){ &GUID_LOGICAL_SECTOR_SIZE,
                                         FLAG_IS_VIRTUAL_DISK | FLAG_IS_REQUIRED, 4 };
    put_le32(data + 36, o->physical_sector_size);
    items[count++] = (struct item){ &GUID_PHYSICAL_SECTOR_SIZE,
                                         FLAG_IS_VIRTUAL_DISK | FLAG_IS_REQUIRED, 4 };
    if (o->locator) {
        uint32_t length = 0;

        rc = build_locator(disk, o, data + 40, &length);
        if (rc)
            return rc;
        items[count++] = (struct item){ &GUID_PARENT_LOCATOR, FLAG_IS_REQUIRED, length };
    }
    mem_copy(region, "metadata", 8);
    put_le16(region + 10, (uint16_t)count);
    for (uint32_t i = 0; i < count; i++) {
        uint8_t *e = region + 32 + i * 32;

        mem_copy(e, items[i].guid->bytes, 16);
        put_le32(e + 16, at);
        put_le32(e + 20, items[i].length);
        put_le32(e + 24, items[i].flags);
        at += items[i].length;
    }
    return VHDX_OK;
}

static void build_region_table(uint8_t *table, uint32_t bat_length)
{
    mem_copy(table, "regi", 4);
    put_le32(table + 8, 2);
    mem_copy(table + 16, GUID_BAT_REGION.bytes, 16);
    put_le64(table + 32, BAT_OFFSET);
    put_le32(table + 40, bat_length);
    put_le32(table + 44, 1);                    /* required */
    mem_copy(table + 48, GUID_METADATA_REGION.bytes, 16);
    put_le64(table + 64, METADATA_OFFSET);
    put_le32(table + 72, METADATA_LENGTH);
    put_le32(table + 76, 1);
    put_le32(table + 4, crc_with_zero_field(table, REGION_TABLE_SIZE));
}

static void build_header(uint8_t *raw, uint64_t sequence, const struct vhdx_guid *file_guid,
                         const struct vhdx_guid *data_guid)
{
    mem_zero(raw, HEADER_SIZE);
    mem_copy(raw, "head", 4);
    put_le64(raw + 8, sequence);
    mem_copy(raw + 16, file_guid->bytes, 16);
    mem_copy(raw + 32, data_guid->bytes, 16);
    put_le16(raw + 66, 1);                      /* Version */
    put_le32(raw + 68, LOG_LENGTH);
    put_le64(raw + 72, LOG_OFFSET);
    put_le32(raw + 4, crc_with_zero_field(raw, HEADER_SIZE));
}

static int check_options(struct vhdx_disk *disk, struct vhdx_create_options *o)
{
    if (!o->logical_sector_size)
        o->logical_sector_size = 512;
    if (!o->physical_sector_size)
        o->physical_sector_size = 4096;
    if (!o->block_size)
        o->block_size = o->locator ? 2 * MIB : 32 * MIB;
    if ((o->logical_sector_size != 512 && o->logical_sector_size != 4096) ||
        (o->physical_sector_size != 512 && o->physical_sector_size != 4096))
        return fail(disk, VHDX_E_ARGUMENT, 0, 0, "sector sizes are 512 or 4096");
    if (!is_power_of_two(o->block_size) || o->block_size < MIN_BLOCK_SIZE ||
        o->block_size > MAX_BLOCK_SIZE)
        return fail(disk, VHDX_E_ARGUMENT, 0, 0,
                    "the block size is a power of two from 1 MiB to 256 MiB");
    if (!o->virtual_size || o->virtual_size > MAX_VIRTUAL_SIZE ||
        o->virtual_size % o->logical_sector_size)
        return fail(disk, VHDX_E_ARGUMENT, 0, 0,
                    "the size is a whole number of sectors, at most 64 TiB");
    if (o->fixed && o->locator)
        return fail(disk, VHDX_E_ARGUMENT, 0, 0, "a differencing disk cannot be fixed");
    return VHDX_OK;
}

static int create_steps(struct vhdx_disk *disk, struct vhdx_create_options *o, uint8_t *buffer)
{
    uint64_t entries, bat_length, blocks, chunk_ratio, end;
    struct vhdx_guid file_guid, data_guid;
    int rc;

    rc = check_options(disk, o);
    if (rc)
        return rc;
    if (disk->file.real_size)
        return fail(disk, VHDX_E_CREATE_EXISTS, disk->file.real_size, 0, NULL);
    chunk_ratio = vhdx_chunk_ratio(o->block_size, o->logical_sector_size);
    blocks = (o->virtual_size + o->block_size - 1) / o->block_size;
    entries = vhdx_bat_entry_count(o->virtual_size, o->block_size, o->logical_sector_size,
                                   o->locator != NULL);
    bat_length = align_up_mib(entries * 8);
    if (bat_length > UINT32_MAX - MIB)
        return fail(disk, VHDX_E_ARGUMENT, 0, 0, "the BAT would pass 4 GiB");
    end = BAT_OFFSET + bat_length;
    rc = file_grow(disk, o->fixed ? end + blocks * o->block_size : end);
    if (!rc && !(disk->file.platform.flags & VHDX_PLATFORM_GROW_ZEROES))
        rc = file_zero(disk, 0, disk->file.real_size);
    /* File identifier (spec 2.2.1). */
    mem_zero(buffer, REGION_TABLE_SIZE);
    mem_copy(buffer, "vhdxfile", 8);
    if (metadata_text_utf16(o->creator ? o->creator : "vhdx-efi " VHDX_CORE_VERSION,
                            buffer + 8, 510) == SIZE_MAX)
        return fail(disk, VHDX_E_ARGUMENT, 0, 0, "the creator text is over 255 characters");
    if (!rc)
        rc = file_write(disk, FILE_ID_OFFSET, buffer, 8 + 512);
    /* Region tables (spec 2.2.3), both copies. */
    mem_zero(buffer, REGION_TABLE_SIZE);
    build_region_table(buffer, (uint32_t)bat_length);
    if (!rc)
        rc = file_write(disk, REGION_TABLE_OFFSET_1, buffer, REGION_TABLE_SIZE);
    if (!rc)
        rc = file_write(disk, REGION_TABLE_OFFSET_2, buffer, REGION_TABLE_SIZE);
    /* Metadata. */
    mem_zero(buffer, METADATA_LENGTH);
    if (!rc)
        rc = build_metadata(disk, o, o->block_size, buffer);
    if (!rc)
        rc = file_write(disk, METADATA_OFFSET, buffer, METADATA_LENGTH);
    /* BAT: zeros (NOT_PRESENT) but for a fixed disk, whose blocks follow it in order. */
    for (uint64_t b = 0; o->fixed && !rc && b < blocks;) {
        uint64_t first = vhdx_bat_payload_index(b, (uint32_t)chunk_ratio) / BAT_ENTRIES_PER_PAGE;
        uint64_t page_start = first * BAT_ENTRIES_PER_PAGE;

        mem_zero(buffer, PAGE_SIZE);
        for (; b < blocks; b++) {
            uint64_t index = vhdx_bat_payload_index(b, (uint32_t)chunk_ratio);

            if (index / BAT_ENTRIES_PER_PAGE != first)
                break;
            put_le64(buffer + (index - page_start) * 8,
                     (end + b * o->block_size) | PAYLOAD_FULLY_PRESENT);
        }
        rc = file_write(disk, BAT_OFFSET + first * PAGE_SIZE, buffer, PAGE_SIZE);
    }
    /* Headers last, once everything they lead to is durable. */
    if (!rc)
        rc = file_flush(disk);
    if (!rc)
        rc = file_random_guid(disk, &file_guid);
    if (!rc)
        rc = file_random_guid(disk, &data_guid);
    build_header(buffer, 1, &file_guid, &data_guid);
    if (!rc)
        rc = file_write(disk, HEADER_OFFSET_1, buffer, HEADER_SIZE);
    build_header(buffer, 2, &file_guid, &data_guid);
    if (!rc)
        rc = file_write(disk, HEADER_OFFSET_2, buffer, HEADER_SIZE);
    if (!rc)
        rc = file_flush(disk);
    return rc;
}

int vhdx_create(const struct vhdx_platform *platform, const struct vhdx_create_options *options,
                struct vhdx_diag *diag)
{
    struct vhdx_create_options o;
    struct vhdx_disk *disk;
    uint8_t *buffer;
    int rc;

    if (!platform || !platform->write || !platform->grow || !platform->flush ||
        !platform->size || !platform->allocate || !platform->release || !platform->random) {
        if (diag) {
            mem_zero(diag, sizeof *diag);
            diag->code = VHDX_E_ARGUMENT;
            diag->s = "incomplete platform";
        }
        return VHDX_E_ARGUMENT;
    }
    disk = platform->allocate(platform->context, sizeof *disk);
    if (!disk) {
        if (diag) {
            mem_zero(diag, sizeof *diag);
            diag->code = VHDX_E_NOMEM;
        }
        return VHDX_E_NOMEM;
    }
    mem_zero(disk, sizeof *disk);
    mem_copy(&o, options, sizeof o);
    rc = file_init(disk, platform, !(platform->flags & VHDX_PLATFORM_READ_ONLY));
    report_init(disk, false);
    buffer = rc ? NULL : core_alloc(disk, METADATA_LENGTH);
    if (!rc && !buffer)
        rc = disk->report.diag.code;
    if (!rc)
        rc = create_steps(disk, &o, buffer);
    if (diag)
        mem_copy(diag, &disk->report.diag, sizeof *diag);
    if (!rc && diag)
        mem_zero(diag, sizeof *diag);
    core_free(disk, buffer);
    file_release(disk);
    platform->release(platform->context, disk);
    return rc;
}

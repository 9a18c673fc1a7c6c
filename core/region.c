/*
 * region.c - the region table (spec 2.2.3): where the BAT and the metadata live.
 *
 * Two 64 KiB copies exist.  The spec gives no rule for choosing between them; like
 * 7-Zip we take copy 1 when its signature, checksum and entry count are sound, else
 * copy 2.  A copy that is intact but wrong (overlaps, bad alignment) is not replaced by
 * the other: region tables only change through the log, so it is real corruption.
 */
#include "region.h"

#include "disk.h"

const struct vhdx_guid GUID_BAT_REGION = { {
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
    0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08 } };
const struct vhdx_guid GUID_METADATA_REGION = { {
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
    0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e } };

/* Table header and entry layout (spec 2.2.3.1, 2.2.3.2). */
#define RT_CHECKSUM    4
#define RT_ENTRY_COUNT 8
#define RT_ENTRIES     16
#define RT_ENTRY_SIZE  32
#define RE_GUID        0
#define RE_OFFSET      16
#define RE_LENGTH      24
#define RE_REQUIRED    28

enum table_fault {
    TABLE_SOUND,
    TABLE_NO_SIGNATURE,
    TABLE_BAD_CHECKSUM,
    TABLE_TOO_MANY_ENTRIES
};

static const char *const fault_text[] = {
    [TABLE_SOUND] = "sound",
    [TABLE_NO_SIGNATURE] = "no 'regi' signature",
    [TABLE_BAD_CHECKSUM] = "bad checksum",
    [TABLE_TOO_MANY_ENTRIES] = "more than 2047 entries",
};

/* Both copies bad: the %s of VHDX_E_NO_VALID_REGION_TABLE, one text per combination. */
static const char *const both_faults_text[4][4] = {
    [1][1] = "no 'regi' signature; copy 2: no 'regi' signature",
    [1][2] = "no 'regi' signature; copy 2: bad checksum",
    [1][3] = "no 'regi' signature; copy 2: more than 2047 entries",
    [2][1] = "bad checksum; copy 2: no 'regi' signature",
    [2][2] = "bad checksum; copy 2: bad checksum",
    [2][3] = "bad checksum; copy 2: more than 2047 entries",
    [3][1] = "more than 2047 entries; copy 2: no 'regi' signature",
    [3][2] = "more than 2047 entries; copy 2: bad checksum",
    [3][3] = "more than 2047 entries; copy 2: more than 2047 entries",
};

static enum table_fault table_fault(const uint8_t *table)
{
    if (!mem_equal(table, "regi", 4))
        return TABLE_NO_SIGNATURE;
    if (get_le32(table + RT_CHECKSUM) != crc_with_zero_field(table, REGION_TABLE_SIZE))
        return TABLE_BAD_CHECKSUM;
    if (get_le32(table + RT_ENTRY_COUNT) > REGION_MAX_ENTRIES)
        return TABLE_TOO_MANY_ENTRIES;
    return TABLE_SOUND;
}

/* Validate one region against the file, the log and the regions before it. */
static int check_region(struct vhdx_disk *disk, uint32_t index)
{
    const struct vhdx_region *r = &disk->regions.list[index];
    uint64_t end;
    int rc;

    if (r->offset % MIB || r->length % MIB || r->offset < HEADER_SECTION_SIZE ||
        add_overflows(r->offset, r->length, &end))
        return problem(disk, false, VHDX_E_REGION_PLACEMENT, index, r->offset, NULL);
    if (end > disk->file.size) {
        rc = problem(disk, false, VHDX_E_REGION_PAST_EOF, index, r->offset, NULL);
        if (rc)
            return rc;
    }
    if (ranges_overlap(r->offset, r->length, disk->headers.current.log_offset, disk->headers.current.log_length)) {
        rc = problem(disk, false, VHDX_E_REGION_OVERLAPS_LOG, index, r->offset, NULL);
        if (rc)
            return rc;
    }
    for (uint32_t j = 0; j < index; j++) {
        const struct vhdx_region *other = &disk->regions.list[j];

        if (guid_equal(&other->guid, &r->guid))
            return problem(disk, false, VHDX_E_REGION_DUPLICATE, index, j, NULL);
        if (ranges_overlap(r->offset, r->length, other->offset, other->length)) {
            rc = problem(disk, false, VHDX_E_REGION_OVERLAP, j, index, NULL);
            if (rc)
                return rc;
        }
    }
    return VHDX_OK;
}

static int parse_table(struct vhdx_disk *disk, const uint8_t *table)
{
    uint32_t count = get_le32(table + RT_ENTRY_COUNT);
    bool have_bat = false, have_metadata = false;
    int rc;

    disk->regions.list = count ? core_alloc(disk, count * sizeof *disk->regions.list) : NULL;
    if (count && !disk->regions.list)
        return disk->report.diag.code;
    disk->regions.count = count;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = table + RT_ENTRIES + (size_t)i * RT_ENTRY_SIZE;
        struct vhdx_region *r = &disk->regions.list[i];
        uint32_t required = get_le32(e + RE_REQUIRED);

        guid_read(&r->guid, e + RE_GUID);
        r->offset = get_le64(e + RE_OFFSET);
        r->length = get_le32(e + RE_LENGTH);
        r->required = required & 1;
        if (required & ~1u)
            quirk(disk, VHDX_E_REGION_RESERVED, i, required, NULL);
        rc = check_region(disk, i);
        if (rc)
            return rc;
        if (guid_equal(&r->guid, &GUID_BAT_REGION)) {
            have_bat = true;
            disk->regions.bat_offset = r->offset;
            disk->regions.bat_length = r->length;
        } else if (guid_equal(&r->guid, &GUID_METADATA_REGION)) {
            have_metadata = true;
            disk->regions.metadata_offset = r->offset;
            disk->regions.metadata_length = r->length;
        } else if (r->required) {
            return problem_guid(disk, true, VHDX_E_REGION_UNKNOWN_REQUIRED, i, &r->guid);
        }
    }
    if (!have_bat)
        return problem(disk, true, VHDX_E_REGION_MISSING, 0, 0, "BAT");
    if (!have_metadata)
        return problem(disk, true, VHDX_E_REGION_MISSING, 0, 0, "metadata");
    return VHDX_OK;
}

int region_table_load(struct vhdx_disk *disk)
{
    uint8_t *table;
    enum table_fault fault1, fault2;
    int rc;

    table = core_alloc(disk, REGION_TABLE_SIZE);
    if (!table)
        return disk->report.diag.code;
    rc = file_read(disk, REGION_TABLE_OFFSET_1, table, REGION_TABLE_SIZE);
    if (rc)
        goto out;
    fault1 = table_fault(table);
    if (fault1) {
        rc = file_read(disk, REGION_TABLE_OFFSET_2, table, REGION_TABLE_SIZE);
        if (rc)
            goto out;
        fault2 = table_fault(table);
        if (fault2) {
            rc = fail(disk, VHDX_E_NO_VALID_REGION_TABLE, 0, 0, both_faults_text[fault1][fault2]);
            goto out;
        }
        quirk_text(disk, VHDX_PART_REGION, "region table copy 1: %s; using copy 2", 0, 0, fault_text[fault1]);
    }
    rc = parse_table(disk, table);
    if (!rc && !fault1 && (disk->report.checking)) {
        /* A damaged spare is harmless today but leaves no fallback: report it. */
        uint8_t *spare = core_alloc(disk, REGION_TABLE_SIZE);

        if (!spare) {
            rc = disk->report.diag.code;
            goto out;
        }
        rc = file_read(disk, REGION_TABLE_OFFSET_2, spare, REGION_TABLE_SIZE);
        if (!rc && table_fault(spare))
            quirk_text(disk, VHDX_PART_REGION, "region table copy 2: %s", 0, 0, fault_text[table_fault(spare)]);
        core_free(disk, spare);
    }
out:
    core_free(disk, table);
    return rc;
}

void region_table_release(struct vhdx_disk *disk)
{
    core_free(disk, disk->regions.list);
    disk->regions.list = NULL;
    disk->regions.count = 0;
}

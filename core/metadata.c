/*
 * metadata.c - the metadata region (spec 2.6): the table, the known items, and the
 * parent locator of differencing disks.
 *
 * Item offsets in the table are relative to the metadata *region*; key and value
 * offsets inside the parent locator are relative to the locator *item* (trap T17).
 */
#include "metadata.h"

#include "disk.h"

const struct vhdx_guid GUID_FILE_PARAMETERS = { {
    0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
    0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b } };
const struct vhdx_guid GUID_VIRTUAL_DISK_SIZE = { {
    0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
    0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8 } };
const struct vhdx_guid GUID_VIRTUAL_DISK_ID = { {
    0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45,
    0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46 } };
const struct vhdx_guid GUID_LOGICAL_SECTOR_SIZE = { {
    0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47,
    0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f } };
const struct vhdx_guid GUID_PHYSICAL_SECTOR_SIZE = { {
    0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44,
    0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56 } };
const struct vhdx_guid GUID_PARENT_LOCATOR = { {
    0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45,
    0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c } };

/* The parent locator type of a VHDX parent (spec 2.6.2.6.1). */
const struct vhdx_guid GUID_LOCATOR_TYPE_VHDX = { {
    0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a,
    0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13 } };

/* Table layout (spec 2.6.1.1, 2.6.1.2). */
#define MT_ENTRY_COUNT 10
#define MT_ENTRIES     32
#define MT_ENTRY_SIZE  32
#define ME_ITEM_ID     0
#define ME_OFFSET      16
#define ME_LENGTH      20
#define ME_FLAGS       24
#define ME_RESERVED    28
#define FLAG_IS_USER         (1u << 0)
#define FLAG_IS_VIRTUAL_DISK (1u << 1)
#define FLAG_IS_REQUIRED     (1u << 2)
#define MAX_USER_ITEMS       1024u

/* File Parameters flags (spec 2.6.2.1). */
#define FP_LEAVE_BLOCK_ALLOCATED (1u << 0)
#define FP_HAS_PARENT            (1u << 1)

/* Parent locator layout (spec 2.6.2.6). */
#define PL_HEADER_SIZE 20
#define PL_ENTRY_SIZE  12

enum known_item {
    ITEM_FILE_PARAMETERS,
    ITEM_VIRTUAL_DISK_SIZE,
    ITEM_VIRTUAL_DISK_ID,
    ITEM_LOGICAL_SECTOR_SIZE,
    ITEM_PHYSICAL_SECTOR_SIZE,
    ITEM_PARENT_LOCATOR,
    KNOWN_ITEMS
};

static const struct {
    const struct vhdx_guid *guid;
    const char *name;
    uint32_t size;                  /* exact size; 0 = variable */
} known_items[KNOWN_ITEMS] = {
    [ITEM_FILE_PARAMETERS] = { &GUID_FILE_PARAMETERS, "File Parameters", 8 },
    [ITEM_VIRTUAL_DISK_SIZE] = { &GUID_VIRTUAL_DISK_SIZE, "Virtual Disk Size", 8 },
    [ITEM_VIRTUAL_DISK_ID] = { &GUID_VIRTUAL_DISK_ID, "Virtual Disk ID", 16 },
    [ITEM_LOGICAL_SECTOR_SIZE] = { &GUID_LOGICAL_SECTOR_SIZE, "Logical Sector Size", 4 },
    [ITEM_PHYSICAL_SECTOR_SIZE] = { &GUID_PHYSICAL_SECTOR_SIZE, "Physical Sector Size", 4 },
    [ITEM_PARENT_LOCATOR] = { &GUID_PARENT_LOCATOR, "Parent Locator", 0 },
};

struct item_location {
    bool present;
    uint32_t offset;                /* relative to the metadata region */
    uint32_t length;
    uint32_t entry;                 /* its entry in the table */
};

static int known_item_index(const struct vhdx_guid *guid)
{
    for (int k = 0; k < KNOWN_ITEMS; k++) {
        if (guid_equal(guid, known_items[k].guid))
            return k;
    }
    return -1;
}

/* Check every table entry; remember where the known system items are. */
/* An entry's identity, for the duplicate check: its item ID and whether it is a user item. */
struct entry_id {
    uint8_t id[16];
    uint8_t is_user;
    uint32_t index;
};

static int compare_ids(const struct entry_id *a, const struct entry_id *b)
{
    for (unsigned k = 0; k < 16; k++) {
        if (a->id[k] != b->id[k])
            return a->id[k] < b->id[k] ? -1 : 1;
    }
    return a->is_user != b->is_user ? (a->is_user ? 1 : -1) : 0;
}

static bool id_before(const void *a, const void *b)
{
    int c = compare_ids(a, b);

    return c ? c < 0 : ((const struct entry_id *)a)->index <
                       ((const struct entry_id *)b)->index;
}

/*
 * No two entries of the table share an item ID and user flag (spec 2.6.1.2).  Sorted,
 * duplicates are neighbours: n log n, where comparing every pair cost n^2 (2047 entries:
 * four million comparisons).
 */
static int check_duplicates(struct vhdx_disk *disk, const uint8_t *table, uint32_t count)
{
    struct entry_id *ids = core_alloc(disk, (count ? count : 1) * sizeof *ids);
    int rc = VHDX_OK;

    if (!ids)
        return disk->report.diag.code;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = table + MT_ENTRIES + (size_t)i * MT_ENTRY_SIZE;

        mem_copy(ids[i].id, e + ME_ITEM_ID, 16);
        ids[i].is_user = (get_le32(e + ME_FLAGS) & FLAG_IS_USER) != 0;
        ids[i].index = i;
    }
    sort_records(ids, count, sizeof *ids, id_before);
    for (uint32_t i = 1; i < count && !rc; i++) {
        if (compare_ids(&ids[i - 1], &ids[i]) == 0)
            rc = problem(disk, false, VHDX_E_META_DUPLICATE, ids[i].index, ids[i - 1].index,
                         NULL);
    }
    core_free(disk, ids);
    return rc;
}

static int scan_table(struct vhdx_disk *disk, const uint8_t *table,
                      struct item_location items[KNOWN_ITEMS])
{
    uint32_t count = get_le16(table + MT_ENTRY_COUNT);
    uint32_t user_items = 0;
    int rc;

    if (count > METADATA_MAX_ENTRIES)
        return problem(disk, true, VHDX_E_META_COUNT, count, METADATA_MAX_ENTRIES, "entries");
    rc = check_duplicates(disk, table, count);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = table + MT_ENTRIES + (size_t)i * MT_ENTRY_SIZE;
        struct vhdx_guid id;
        uint32_t offset = get_le32(e + ME_OFFSET);
        uint32_t length = get_le32(e + ME_LENGTH);
        uint32_t flags = get_le32(e + ME_FLAGS);
        bool is_user = flags & FLAG_IS_USER;
        int known;

        guid_read(&id, e + ME_ITEM_ID);
        if (flags & ~7u || get_le32(e + ME_RESERVED))
            quirk(disk, VHDX_E_META_RESERVED, i, flags, NULL);
        /* Items live after the table, inside the region; empty items have offset 0. */
        if (length == 0 ? offset != 0
                        : (offset < METADATA_TABLE_SIZE || length > METADATA_ITEM_MAX ||
                           (uint64_t)offset + length > disk->regions.metadata_length)) {
            rc = problem(disk, false, VHDX_E_META_ITEM_BOUNDS, i, offset, NULL);
            if (rc)
                return rc;
            continue;
        }
        for (uint32_t j = 0; j < i; j++) {
            const uint8_t *o = table + MT_ENTRIES + (size_t)j * MT_ENTRY_SIZE;

            if (ranges_overlap(offset, length, get_le32(o + ME_OFFSET), get_le32(o + ME_LENGTH))) {
                rc = problem(disk, false, VHDX_E_META_ITEM_OVERLAP, j, i, NULL);
                if (rc)
                    return rc;
            }
        }
        if (is_user && ++user_items > MAX_USER_ITEMS) {
            rc = problem(disk, false, VHDX_E_META_COUNT, user_items, MAX_USER_ITEMS,
                         "user items");
            if (rc)
                return rc;
        }
        known = is_user ? -1 : known_item_index(&id);
        if (known >= 0) {
            if (items[known].present)
                continue;       /* duplicate, already reported */
            items[known].present = true;
            items[known].offset = offset;
            items[known].length = length;
            items[known].entry = i;
        } else if (flags & FLAG_IS_REQUIRED) {
            return problem_guid(disk, true, VHDX_E_META_UNKNOWN_REQUIRED, i, &id);
        }
    }
    return VHDX_OK;
}

/* Read a fixed-size known item into `out`. */
static int read_item(struct vhdx_disk *disk, const struct item_location items[KNOWN_ITEMS],
                     enum known_item which, uint8_t *out)
{
    if (!items[which].present)
        return problem(disk, true, VHDX_E_META_MISSING, 0, 0, known_items[which].name);
    if (items[which].length != known_items[which].size)
        return problem(disk, true, VHDX_E_META_ITEM_SIZE, items[which].length,
                       known_items[which].size, known_items[which].name);
    return file_read(disk, disk->regions.metadata_offset + items[which].offset, out,
                     known_items[which].size);
}

/* UTF-16LE to UTF-8; unpaired surrogates become U+FFFD.  `out` holds 3 bytes per unit. */
static void utf16le_to_utf8(const uint8_t *in, size_t units, char *out)
{
    size_t o = 0;

    for (size_t i = 0; i < units; i++) {
        uint32_t c = get_le16(in + 2 * i);

        if (c >= 0xD800 && c <= 0xDBFF && i + 1 < units) {
            uint32_t low = get_le16(in + 2 * (i + 1));

            if (low >= 0xDC00 && low <= 0xDFFF) {
                c = 0x10000 + ((c - 0xD800) << 10) + (low - 0xDC00);
                i++;
            }
        }
        if (c >= 0xD800 && c <= 0xDFFF)
            c = 0xFFFD;
        if (c < 0x80) {
            out[o++] = (char)c;
        } else if (c < 0x800) {
            out[o++] = (char)(0xC0 | (c >> 6));
            out[o++] = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            out[o++] = (char)(0xE0 | (c >> 12));
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (c & 0x3F));
        } else {
            /* A surrogate pair (4 input bytes) becomes 4 output bytes: within budget. */
            out[o++] = (char)(0xF0 | (c >> 18));
            out[o++] = (char)(0x80 | ((c >> 12) & 0x3F));
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (c & 0x3F));
        }
    }
    out[o] = '\0';
}

static char *copy_string(struct vhdx_disk *disk, const uint8_t *utf16, uint32_t bytes)
{
    char *s = core_alloc(disk, (size_t)bytes / 2 * 3 + 1);

    if (s)
        utf16le_to_utf8(utf16, bytes / 2, s);
    return s;
}

/* A key or value must lie inside the item, after the entries, with an even length. */
static bool string_fits(uint32_t offset, uint32_t length, uint32_t strings_start,
                        uint32_t item_length)
{
    return length > 0 && length % 2 == 0 && offset >= strings_start &&
           (uint64_t)offset + length <= item_length;
}

/* Keys, for the duplicate check: ordered by hash, length, then bytes. */
struct key_ref {
    const uint8_t *bytes;
    uint32_t hash;
    uint32_t length;
    uint32_t entry;
};

static int compare_keys(const struct key_ref *x, const struct key_ref *y)
{
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    if (x->length != y->length)
        return x->length < y->length ? -1 : 1;
    for (uint32_t i = 0; i < x->length; i++) {
        if (x->bytes[i] != y->bytes[i])
            return x->bytes[i] < y->bytes[i] ? -1 : 1;
    }
    return 0;
}

static bool key_before(const void *a, const void *b)
{
    return compare_keys(a, b) < 0;
}

/*
 * Keys are unique (spec 2.6.2.6.2).  Sorted, equal keys are neighbours: n log n
 * comparisons, most of them settled by the hash, where comparing every pair costs n^2
 * times the key length (2,000 keys with a long common prefix took minutes that way).
 */
static int check_unique_keys(struct vhdx_disk *disk, const uint8_t *item, uint32_t count)
{
    struct key_ref *keys = core_alloc(disk, (count ? count : 1) * sizeof *keys);
    int rc = VHDX_OK;

    if (!keys)
        return disk->report.diag.code;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = item + PL_HEADER_SIZE + i * PL_ENTRY_SIZE;

        keys[i].bytes = item + get_le32(e);
        keys[i].length = get_le16(e + 8);
        keys[i].hash = vhdx_crc32c(0, keys[i].bytes, keys[i].length);
        keys[i].entry = i;
    }
    sort_records(keys, count, sizeof *keys, key_before);
    for (uint32_t i = 1; i < count; i++) {
        if (compare_keys(&keys[i - 1], &keys[i]) == 0) {
            rc = problem(disk, true, VHDX_E_PARENT_LOCATOR,
                         max_u64(keys[i].entry, keys[i - 1].entry), 0, "duplicate key");
            break;
        }
    }
    core_free(disk, keys);
    return rc;
}

/*
 * The locator's strings are copied (as UTF-8) once validated.  Entries may not make
 * that cost more than the item holds: hostile windows that overlap each other would
 * otherwise turn a 1 MiB item into gigabytes of copies.
 */
static int parse_parent_locator(struct vhdx_disk *disk, const struct item_location *where)
{
    uint8_t *item;
    uint32_t count, strings_start;
    uint64_t string_bytes = 0;
    int rc = VHDX_OK;

    if (where->length < PL_HEADER_SIZE)
        return problem(disk, true, VHDX_E_META_ITEM_SIZE, where->length, PL_HEADER_SIZE,
                       "Parent Locator");
    item = core_alloc(disk, where->length);
    if (!item)
        return disk->report.diag.code;
    rc = file_read(disk, disk->regions.metadata_offset + where->offset, item, where->length);
    if (rc)
        goto out;
    guid_read(&disk->locator.type, item);
    count = get_le16(item + 18);
    strings_start = PL_HEADER_SIZE + count * PL_ENTRY_SIZE;
    if (strings_start > where->length) {
        rc = problem(disk, true, VHDX_E_PARENT_LOCATOR, count, 0,
                     "more entries than the item can hold");
        goto out;
    }
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = item + PL_HEADER_SIZE + i * PL_ENTRY_SIZE;
        uint32_t key_offset = get_le32(e), value_offset = get_le32(e + 4);
        uint32_t key_length = get_le16(e + 8), value_length = get_le16(e + 10);

        if (!string_fits(key_offset, key_length, strings_start, where->length) ||
            !string_fits(value_offset, value_length, strings_start, where->length)) {
            rc = problem(disk, true, VHDX_E_PARENT_LOCATOR, i, 0,
                         "key or value outside the item, empty or of odd length");
            goto out;
        }
        string_bytes += (uint64_t)key_length + value_length;
        if (string_bytes > where->length - strings_start) {
            rc = problem(disk, true, VHDX_E_PARENT_LOCATOR, i, 0,
                         "keys and values overlap: together longer than the item");
            goto out;
        }
    }
    rc = check_unique_keys(disk, item, count);
    if (rc)
        goto out;
    disk->locator.pairs = count ? core_alloc(disk, count * sizeof *disk->locator.pairs) : NULL;
    if (count && !disk->locator.pairs) {
        rc = disk->report.diag.code;
        goto out;
    }
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = item + PL_HEADER_SIZE + i * PL_ENTRY_SIZE;

        disk->locator.pairs[i].key = copy_string(disk, item + get_le32(e), get_le16(e + 8));
        disk->locator.pairs[i].value = copy_string(disk, item + get_le32(e + 4),
                                                   get_le16(e + 10));
        disk->locator.count = i + 1;
        if (!disk->locator.pairs[i].key || !disk->locator.pairs[i].value) {
            rc = disk->report.diag.code;
            goto out;
        }
    }
out:
    core_free(disk, item);
    return rc;
}

/* Known values (spec 2.6.2.1 - 2.6.2.5). */
static int check_values(struct vhdx_disk *disk, uint32_t fp_flags)
{
    int rc;

    if (!is_power_of_two(disk->geometry.block_size) || disk->geometry.block_size < MIN_BLOCK_SIZE ||
        disk->geometry.block_size > MAX_BLOCK_SIZE)
        return problem(disk, true, VHDX_E_BLOCK_SIZE, disk->geometry.block_size, 0, NULL);
    if (fp_flags & ~(FP_LEAVE_BLOCK_ALLOCATED | FP_HAS_PARENT)) {
        rc = problem(disk, false, VHDX_E_FILE_PARAMETERS, fp_flags, 0, NULL);
        if (rc)
            return rc;
    }
    if (disk->geometry.logical_sector_size != 512 && disk->geometry.logical_sector_size != 4096)
        return problem(disk, true, VHDX_E_SECTOR_SIZE, disk->geometry.logical_sector_size, 0, "logical");
    if (disk->geometry.physical_sector_size != 512 && disk->geometry.physical_sector_size != 4096) {
        rc = problem(disk, false, VHDX_E_SECTOR_SIZE, disk->geometry.physical_sector_size, 0,
                     "physical");
        if (rc)
            return rc;
        disk->geometry.physical_sector_size = disk->geometry.logical_sector_size;
    }
    if (disk->geometry.virtual_size == 0 || disk->geometry.virtual_size > MAX_VIRTUAL_SIZE ||
        disk->geometry.virtual_size % disk->geometry.logical_sector_size)
        return problem(disk, true, VHDX_E_VIRTUAL_SIZE, disk->geometry.virtual_size,
                       disk->geometry.logical_sector_size, NULL);
    return VHDX_OK;
}

int metadata_load(struct vhdx_disk *disk)
{
    struct item_location items[KNOWN_ITEMS];
    uint8_t *table, value[16];
    uint32_t fp_flags = 0;
    int rc;

    mem_zero(items, sizeof items);
    if (disk->regions.metadata_length < METADATA_TABLE_SIZE)
        return problem(disk, true, VHDX_E_META_TOO_SMALL, disk->regions.metadata_length, 0,
                       NULL);
    table = core_alloc(disk, METADATA_TABLE_SIZE);
    if (!table)
        return disk->report.diag.code;
    rc = file_read(disk, disk->regions.metadata_offset, table, METADATA_TABLE_SIZE);
    if (rc)
        goto out;
    if (!mem_equal(table, "metadata", 8)) {
        rc = problem(disk, true, VHDX_E_META_SIGNATURE, 0, 0, NULL);
        goto out;
    }
    rc = scan_table(disk, table, items);
    if (rc)
        goto out;

    rc = read_item(disk, items, ITEM_FILE_PARAMETERS, value);
    if (rc)
        goto out;
    disk->geometry.block_size = get_le32(value);
    fp_flags = get_le32(value + 4);
    disk->geometry.fixed = fp_flags & FP_LEAVE_BLOCK_ALLOCATED;
    disk->geometry.has_parent = fp_flags & FP_HAS_PARENT;

    rc = read_item(disk, items, ITEM_VIRTUAL_DISK_SIZE, value);
    if (rc)
        goto out;
    disk->geometry.virtual_size = get_le64(value);
    rc = read_item(disk, items, ITEM_LOGICAL_SECTOR_SIZE, value);
    if (rc)
        goto out;
    disk->geometry.logical_sector_size = get_le32(value);
    rc = read_item(disk, items, ITEM_PHYSICAL_SECTOR_SIZE, value);
    if (rc)
        goto out;
    disk->geometry.physical_sector_size = get_le32(value);
    rc = read_item(disk, items, ITEM_VIRTUAL_DISK_ID, value);
    if (rc)
        goto out;
    guid_read(&disk->geometry.virtual_disk_id, value);

    rc = check_values(disk, fp_flags);
    if (rc)
        goto out;
    disk->geometry.block_shift = log2_u64(disk->geometry.block_size);
    disk->geometry.sector_shift = log2_u64(disk->geometry.logical_sector_size);

    if (items[ITEM_PARENT_LOCATOR].present) {
        disk->locator.item_offset = items[ITEM_PARENT_LOCATOR].offset;
        disk->locator.item_length = items[ITEM_PARENT_LOCATOR].length;
        disk->locator.table_entry = items[ITEM_PARENT_LOCATOR].entry;
        rc = parse_parent_locator(disk, &items[ITEM_PARENT_LOCATOR]);
    } else if (disk->geometry.has_parent) {
        rc = problem(disk, true, VHDX_E_META_MISSING, 0, 0,
                     "Parent Locator (the file is a differencing disk)");
    }
out:
    core_free(disk, table);
    return rc;
}

void metadata_release(struct vhdx_disk *disk)
{
    for (uint32_t i = 0; i < disk->locator.count; i++) {
        core_free(disk, disk->locator.pairs[i].key);
        core_free(disk, disk->locator.pairs[i].value);
    }
    core_free(disk, disk->locator.pairs);
    mem_zero(&disk->locator, sizeof disk->locator);
}

/* UTF-8 to UTF-16LE; the bytes written, or SIZE_MAX if `out` is too small. */
static size_t utf8_to_utf16le(const char *in, uint8_t *out, size_t size)
{
    size_t n = 0;

    while (*in) {
        uint32_t c = (uint8_t)*in++;
        unsigned more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;

        c &= more == 3 ? 0x07 : more == 2 ? 0x0F : more == 1 ? 0x1F : 0x7F;
        while (more-- && (*in & 0xC0) == 0x80)
            c = c << 6 | (*in++ & 0x3F);
        if (c >= 0x10000) {
            if (n + 4 > size)
                return SIZE_MAX;
            c -= 0x10000;
            put_le16(out + n, (uint16_t)(0xD800 | (c >> 10)));
            put_le16(out + n + 2, (uint16_t)(0xDC00 | (c & 0x3FF)));
            n += 4;
        } else {
            if (n + 2 > size)
                return SIZE_MAX;
            put_le16(out + n, (uint16_t)c);
            n += 2;
        }
    }
    return n;
}

size_t metadata_text_utf16(const char *text, uint8_t *out, size_t size)
{
    return utf8_to_utf16le(text, out, size);
}

int metadata_build_locator(const struct vhdx_locator_entry *entries, uint32_t count,
                           uint8_t *item, uint32_t size, uint32_t *length)
{
    uint32_t at = PL_HEADER_SIZE + count * PL_ENTRY_SIZE;

    if (count > 0xFFFF || at > size)
        return VHDX_E_ARGUMENT;
    mem_zero(item, at);
    mem_copy(item, GUID_LOCATOR_TYPE_VHDX.bytes, 16);
    put_le16(item + 18, (uint16_t)count);
    for (uint32_t i = 0; i < count; i++) {
        uint8_t *e = item + PL_HEADER_SIZE + i * PL_ENTRY_SIZE;
        size_t key = utf8_to_utf16le(entries[i].key, item + at, size - at), value;

        if (key == SIZE_MAX || key == 0 || key > 0xFFFF)
            return VHDX_E_ARGUMENT;
        put_le32(e, at);
        put_le16(e + 8, (uint16_t)key);
        at += (uint32_t)key;
        value = utf8_to_utf16le(entries[i].value, item + at, size - at);
        if (value == SIZE_MAX || value == 0 || value > 0xFFFF)
            return VHDX_E_ARGUMENT;
        put_le32(e + 4, at);
        put_le16(e + 10, (uint16_t)value);
        at += (uint32_t)value;
    }
    *length = at;
    return VHDX_OK;
}

/* The end of the last item in the table: where a grown item can go. */
static int items_end(struct vhdx_disk *disk, const uint8_t *table, uint32_t *end)
{
    uint32_t count = get_le16(table + MT_ENTRY_COUNT);

    *end = METADATA_TABLE_SIZE;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = table + MT_ENTRIES + (size_t)i * MT_ENTRY_SIZE;

        if (get_le32(e + ME_LENGTH))
            *end = (uint32_t)max_u64(*end, (uint64_t)get_le32(e + ME_OFFSET) +
                                               get_le32(e + ME_LENGTH));
    }
    (void)disk;
    return VHDX_OK;
}

/*
 * Set one key of the parent locator (added when missing) through the log (spec 2.3: the
 * metadata region changes only through it).  The item is rewritten where it is when the
 * new one fits, else after the last item; its table entry follows.
 */
int metadata_set_locator(struct vhdx_disk *disk, const char *key, const char *value)
{
    struct locator *l = &disk->locator;
    uint32_t count = l->count, length = 0, offset = l->item_offset, pages_used = 0;
    struct vhdx_locator_entry *entries;
    struct log_page pages[2 + METADATA_ITEM_MAX / PAGE_SIZE + 1];
    uint8_t *table = NULL, *item = NULL, *region_pages = NULL;
    uint64_t first_page, last_page;
    bool found = false;
    int rc;

    if (!l->item_length)
        return fail(disk, VHDX_E_LOCATOR_KEY, 0, 0, "item (the file has no parent locator)");
    entries = core_alloc(disk, (count + 1) * sizeof *entries);
    table = entries ? core_alloc(disk, METADATA_TABLE_SIZE) : NULL;
    item = table ? core_alloc(disk, METADATA_ITEM_MAX) : NULL;
    if (!item) {
        rc = disk->report.diag.code;
        goto out;
    }
    for (uint32_t i = 0; i < count; i++) {
        const char *k = l->pairs[i].key, *want = key;

        while (*k && *k == *want)
            k++, want++;
        entries[i].key = l->pairs[i].key;
        entries[i].value = *k == *want ? (found = true, value) : l->pairs[i].value;
    }
    if (!found)
        entries[count++] = (struct vhdx_locator_entry){ key, value };
    if (metadata_build_locator(entries, count, item, METADATA_ITEM_MAX, &length)) {
        rc = fail(disk, VHDX_E_ARGUMENT, 0, 0, "a parent locator too large");
        goto out;
    }
    rc = file_read(disk, disk->regions.metadata_offset, table, METADATA_TABLE_SIZE);
    if (rc)
        goto out;
    if (length > l->item_length) {
        rc = items_end(disk, table, &offset);
        if (!rc && (uint64_t)offset + length > disk->regions.metadata_length)
            rc = fail(disk, VHDX_E_ARGUMENT, 0, 0,
                      "no room in the metadata region for a larger parent locator");
        if (rc)
            goto out;
    }
    put_le32(table + MT_ENTRIES + (size_t)l->table_entry * MT_ENTRY_SIZE + ME_OFFSET, offset);
    put_le32(table + MT_ENTRIES + (size_t)l->table_entry * MT_ENTRY_SIZE + ME_LENGTH, length);
    /* The pages that change: the entry's page of the table, and the item's pages. */
    first_page = offset / PAGE_SIZE;
    last_page = ((uint64_t)offset + length - 1) / PAGE_SIZE;
    region_pages = core_alloc(disk, (size_t)(last_page - first_page + 1) * PAGE_SIZE);
    if (!region_pages) {
        rc = disk->report.diag.code;
        goto out;
    }
    rc = file_read(disk, disk->regions.metadata_offset + first_page * PAGE_SIZE, region_pages,
                   (size_t)(last_page - first_page + 1) * PAGE_SIZE);
    if (rc)
        goto out;
    mem_copy(region_pages + (offset - first_page * PAGE_SIZE), item, length);
    {
        uint32_t entry_page = (MT_ENTRIES + l->table_entry * MT_ENTRY_SIZE) / PAGE_SIZE;

        pages[pages_used++] = (struct log_page){
            disk->regions.metadata_offset + (uint64_t)entry_page * PAGE_SIZE,
            table + (size_t)entry_page * PAGE_SIZE };
    }
    for (uint64_t p = first_page; p <= last_page; p++)
        pages[pages_used++] = (struct log_page){
            disk->regions.metadata_offset + p * PAGE_SIZE,
            region_pages + (size_t)(p - first_page) * PAGE_SIZE };
    rc = logw_commit(disk, pages, pages_used);
    if (rc)
        goto out;
    /* The locator as it now stands in the file. */
    {
        struct item_location where = { true, offset, length, l->table_entry };

        metadata_release(disk);
        l->item_offset = offset;
        l->item_length = length;
        l->table_entry = where.entry;
        rc = parse_parent_locator(disk, &where);
    }
out:
    core_free(disk, region_pages);
    core_free(disk, item);
    core_free(disk, table);
    core_free(disk, entries);
    return rc;
}

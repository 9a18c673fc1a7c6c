/*
 * logscan.c - finding the active log sequence (spec 2.3.2, 2.3.3) in one pass over the
 * log, and walking its descriptors.
 *
 * The log is a circular buffer of 4 KiB sectors.  Every sector that starts a valid entry
 * is a candidate; an entry links to the valid entry that immediately follows it when
 * that one's sequence number is one higher; following links from any entry ends at its
 * chain's head.  A head h ends a valid sequence when h.Tail names an entry whose chain
 * ends at h and the entries from tail to head fit in the log; among those the highest
 * head sequence number wins.  A torn or stale entry just ends a chain (trap T9).
 *
 * Bounded work for any log, however its entries overlap:
 *   - Each sector is read once.  The raw CRC of every prefix of the log is kept (4 bytes
 *     per sector), so the CRC of any entry, wrapped or not, follows from two prefixes
 *     (crc32c.h) instead of reading the entry again: a hostile log whose every sector
 *     claims to start an entry as long as the log costs one pass, not one per claim.
 *   - An entry's descriptor and data sectors must carry descriptor or "data" signatures,
 *     so they can never hold another entry's "loge" header: the checks of an entry end at
 *     the next header sector at the latest, and every sector is checked for at most one
 *     entry as the stream passes (a second pass over the start of the log finishes an
 *     entry that wraps around the end).
 * Memory: the prefix CRCs and one record per candidate entry, both proportional to the
 * log's size; a 64 KiB window of the log.
 */
#include "logscan.h"

#include "crc32c.h"
#include "disk.h"

/* Entry header (spec 2.3.1.1). */
#define LE_CHECKSUM          4
#define LE_ENTRY_LENGTH      8
#define LE_TAIL              12
#define LE_SEQUENCE          16
#define LE_DESCRIPTOR_COUNT  24
#define LE_LOG_GUID          32
#define LE_FLUSHED_OFFSET    48
#define LE_LAST_OFFSET       56
/* Descriptors (spec 2.3.1.2, 2.3.1.3): note TrailingBytes precede LeadingBytes. */
#define DESCRIPTOR_SIZE      32
#define D_TRAILING_BYTES     4
#define D_ZERO_LENGTH        8
#define D_LEADING_BYTES      8
#define D_FILE_OFFSET        16
#define D_SEQUENCE           24
/* Data sector (spec 2.3.1.4). */
#define DS_SEQUENCE_HIGH     4
#define DS_SEQUENCE_LOW      4092
#define DESCRIPTORS_PER_SECTOR (LOG_SECTOR_SIZE / DESCRIPTOR_SIZE)
/* The entry header takes the room of two descriptors in the first sector. */
#define HEADER_DESCRIPTORS   2u
#define SCAN_WINDOW          (64u * KIB)
#define FIRST_CAPACITY       64u

struct candidate {
    uint64_t sequence;
    uint64_t span;                  /* sectors from this entry to the end of its head */
    uint32_t slot;                  /* first sector */
    uint32_t sectors;               /* EntryLength / 4096 */
    uint32_t tail_slot;
    uint32_t checksum;              /* as stored */
    int32_t next;                   /* following entry of its sequence, or -1 */
    int32_t head;                   /* last entry reached by following next */
    bool valid;                     /* descriptors, data sectors and CRC checked */
};

/* The candidate whose descriptor and data sectors the stream is passing. */
struct open_entry {
    int32_t index;                  /* -1: none */
    uint32_t seen;                  /* its sectors checked so far */
    uint32_t descriptor_sectors;
    uint32_t descriptors_left;
    uint32_t data_sectors;          /* data descriptors counted so far */
};

struct scan {
    const struct vhdx_guid *guid;
    uint32_t slots;                 /* sectors in the log */
    uint32_t *prefix;               /* raw CRC of the first i sectors, i = 0..slots */
    struct candidate *candidates;   /* in slot order */
    uint32_t count, capacity;
    struct open_entry open;
};

static uint64_t descriptor_sectors(uint64_t descriptors)
{
    return (descriptors + HEADER_DESCRIPTORS + DESCRIPTORS_PER_SECTOR - 1) /
           DESCRIPTORS_PER_SECTOR;
}

/* Spec 2.3.1.2-3: a descriptor's own fields.  *is_data says which kind it is. */
static bool descriptor_ok(const uint8_t *d, uint64_t sequence, bool *is_data)
{
    if (get_le64(d + D_SEQUENCE) != sequence || get_le64(d + D_FILE_OFFSET) % LOG_SECTOR_SIZE)
        return false;
    if (mem_equal(d, "zero", 4)) {
        *is_data = false;
        return get_le64(d + D_ZERO_LENGTH) % LOG_SECTOR_SIZE == 0;
    }
    *is_data = true;
    return mem_equal(d, "desc", 4);
}

static bool data_sector_ok(const uint8_t *s, uint64_t sequence)
{
    return mem_equal(s, "data", 4) &&
           get_le32(s + DS_SEQUENCE_HIGH) == (uint32_t)(sequence >> 32) &&
           get_le32(s + DS_SEQUENCE_LOW) == (uint32_t)sequence;
}

/*
 * Offer the next sector of the stream to the open entry.  True when it belongs to the
 * entry and passed; false when the entry is now closed (failed, or it was complete).
 */
static bool feed_open_entry(struct scan *scan, const uint8_t *sector)
{
    struct open_entry *open = &scan->open;
    struct candidate *c = &scan->candidates[open->index];
    uint32_t k = open->seen;

    if (k < open->descriptor_sectors) {
        uint32_t first = k == 0 ? HEADER_DESCRIPTORS : 0;
        uint32_t n = (uint32_t)min_u64(open->descriptors_left, DESCRIPTORS_PER_SECTOR - first);

        for (uint32_t i = 0; i < n; i++) {
            bool is_data;

            if (!descriptor_ok(sector + (first + i) * DESCRIPTOR_SIZE, c->sequence, &is_data))
                goto failed;
            open->data_sectors += is_data;
        }
        open->descriptors_left -= n;
        if (k + 1 == open->descriptor_sectors &&
            (uint64_t)open->descriptor_sectors + open->data_sectors > c->sectors)
            goto failed;
    } else if (!data_sector_ok(sector, c->sequence)) {
        goto failed;
    }
    open->seen++;
    if (open->seen == open->descriptor_sectors + open->data_sectors) {
        c->valid = true;            /* the CRC is checked once all prefixes are known */
        open->index = -1;
    }
    return true;

failed:
    open->index = -1;
    return false;
}

static int add_candidate(struct vhdx_disk *disk, struct scan *scan)
{
    if (scan->count == scan->capacity) {
        uint32_t capacity = scan->capacity ? 2 * scan->capacity : FIRST_CAPACITY;
        struct candidate *grown;

        capacity = (uint32_t)min_u64(capacity, scan->slots);
        grown = core_alloc(disk, capacity * sizeof *grown);
        if (!grown)
            return disk->report.diag.code;
        if (scan->count)
            mem_copy(grown, scan->candidates, scan->count * sizeof *grown);
        core_free(disk, scan->candidates);
        scan->candidates = grown;
        scan->capacity = capacity;
    }
    scan->count++;
    return VHDX_OK;
}

/* A sector with a "loge" signature: keep it when its header fields are sound. */
static int start_entry(struct vhdx_disk *disk, struct scan *scan, uint32_t slot,
                       const uint8_t *h)
{
    uint32_t length = get_le32(h + LE_ENTRY_LENGTH), tail = get_le32(h + LE_TAIL);
    uint64_t sequence = get_le64(h + LE_SEQUENCE);
    uint32_t descriptors = get_le32(h + LE_DESCRIPTOR_COUNT);
    struct vhdx_guid guid;
    struct candidate *c;
    int rc;

    guid_read(&guid, h + LE_LOG_GUID);
    if (!guid_equal(&guid, scan->guid) || length == 0 || length % LOG_SECTOR_SIZE ||
        length / LOG_SECTOR_SIZE > scan->slots || tail % LOG_SECTOR_SIZE ||
        tail / LOG_SECTOR_SIZE >= scan->slots || sequence == 0 ||
        descriptor_sectors(descriptors) > length / LOG_SECTOR_SIZE)
        return VHDX_OK;
    rc = add_candidate(disk, scan);
    if (rc)
        return rc;
    c = &scan->candidates[scan->count - 1];
    mem_zero(c, sizeof *c);
    c->sequence = sequence;
    c->slot = slot;
    c->sectors = length / LOG_SECTOR_SIZE;
    c->tail_slot = tail / LOG_SECTOR_SIZE;
    c->checksum = get_le32(h + LE_CHECKSUM);
    c->next = c->head = -1;
    scan->open.index = (int32_t)(scan->count - 1);
    scan->open.seen = 0;
    scan->open.descriptor_sectors = (uint32_t)descriptor_sectors(descriptors);
    scan->open.descriptors_left = descriptors;
    scan->open.data_sectors = 0;
    feed_open_entry(scan, h);
    return VHDX_OK;
}

/* Read the log once: prefix CRCs, candidates, and their descriptor and data sectors. */
static int read_log(struct vhdx_disk *disk, struct scan *scan)
{
    uint64_t log_offset = disk->headers.current.log_offset;
    uint8_t *window = core_alloc(disk, SCAN_WINDOW);
    uint32_t per_window = SCAN_WINDOW / LOG_SECTOR_SIZE;
    int rc = VHDX_OK;

    if (!window)
        return disk->report.diag.code;
    scan->open.index = -1;
    for (uint32_t first = 0; first < scan->slots && !rc; first += per_window) {
        uint32_t n = (uint32_t)min_u64(per_window, scan->slots - first);

        rc = file_read(disk, log_offset + (uint64_t)first * LOG_SECTOR_SIZE, window,
                       (size_t)n * LOG_SECTOR_SIZE);
        for (uint32_t i = 0; i < n && !rc; i++) {
            const uint8_t *sector = window + (size_t)i * LOG_SECTOR_SIZE;
            uint32_t slot = first + i;

            /* Zeros only shift the register: one multiplication for an empty sector. */
            scan->prefix[slot + 1] = mem_is_zero(sector, LOG_SECTOR_SIZE)
                                         ? crc32c_shift(scan->prefix[slot], LOG_SECTOR_SIZE)
                                         : crc32c_raw(scan->prefix[slot], sector,
                                                      LOG_SECTOR_SIZE);
            if (scan->open.index >= 0 && feed_open_entry(scan, sector))
                continue;
            if (mem_equal(sector, "loge", 4))
                rc = start_entry(disk, scan, slot, sector);
        }
    }
    /* An entry that wraps around the end: its remaining sectors are at the start. */
    for (uint32_t first = 0; scan->open.index >= 0 && !rc; first += per_window) {
        uint32_t n = (uint32_t)min_u64(per_window, scan->slots - first);

        rc = file_read(disk, log_offset + (uint64_t)first * LOG_SECTOR_SIZE, window,
                       (size_t)n * LOG_SECTOR_SIZE);
        for (uint32_t i = 0; i < n && !rc && scan->open.index >= 0; i++)
            feed_open_entry(scan, window + (size_t)i * LOG_SECTOR_SIZE);
    }
    core_free(disk, window);
    return rc;
}

/* Raw CRC of sectors [from, to) of the log, from two prefixes. */
static uint32_t range_raw(const struct scan *scan, uint32_t from, uint32_t to)
{
    return scan->prefix[to] ^
           crc32c_shift(scan->prefix[from], (uint64_t)(to - from) * LOG_SECTOR_SIZE);
}

/* Spec 2.3.1.1: CRC-32C over the whole entry with its checksum field as zero (trap T3). */
static bool checksum_ok(const struct scan *scan, const struct candidate *c)
{
    uint64_t length = (uint64_t)c->sectors * LOG_SECTOR_SIZE;
    uint64_t end = (uint64_t)c->slot + c->sectors;
    uint8_t stored[4];
    uint32_t raw;

    if (end <= scan->slots) {
        raw = range_raw(scan, c->slot, (uint32_t)end);
    } else {
        uint32_t wrapped = (uint32_t)(end - scan->slots);

        raw = crc32c_shift(range_raw(scan, c->slot, scan->slots),
                           (uint64_t)wrapped * LOG_SECTOR_SIZE) ^ scan->prefix[wrapped];
    }
    /* Take the stored checksum's contribution out: as if bytes 4..7 were zero. */
    put_le32(stored, c->checksum);
    raw ^= crc32c_shift(crc32c_raw(0, stored, 4), length - 8);
    /* The CRC proper starts from all ones and ends inverted. */
    return ~(crc32c_shift(0xFFFFFFFFu, length) ^ raw) == c->checksum;
}

static int32_t candidate_at(const struct scan *scan, uint32_t slot)
{
    uint32_t low = 0, high = scan->count;

    while (low < high) {
        uint32_t mid = low + (high - low) / 2;

        if (scan->candidates[mid].slot < slot)
            low = mid + 1;
        else
            high = mid;
    }
    return low < scan->count && scan->candidates[low].slot == slot ? (int32_t)low : -1;
}

/* Link valid entries into chains and find each one's head (no recursion). */
static int link_entries(struct vhdx_disk *disk, struct scan *scan)
{
    uint32_t n = scan->count;
    int32_t *path;

    for (uint32_t i = 0; i < n; i++) {
        struct candidate *c = &scan->candidates[i];
        int32_t next;

        if (!c->valid)
            continue;
        next = candidate_at(scan, (uint32_t)(((uint64_t)c->slot + c->sectors) % scan->slots));
        if (next >= 0 && scan->candidates[next].valid &&
            scan->candidates[next].sequence == c->sequence + 1)
            c->next = next;
    }
    path = core_alloc(disk, (n ? n : 1) * sizeof *path);
    if (!path)
        return disk->report.diag.code;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t depth = 0;
        int32_t x = (int32_t)i;

        if (!scan->candidates[i].valid)
            continue;
        /* Sequence numbers rise along next links, so the walk ends. */
        while (x >= 0 && scan->candidates[x].head < 0) {
            path[depth++] = x;
            x = scan->candidates[x].next;
        }
        while (depth--) {
            struct candidate *c = &scan->candidates[path[depth]];

            if (c->next < 0) {
                c->head = path[depth];
                c->span = c->sectors;
            } else {
                c->head = scan->candidates[c->next].head;
                c->span = c->sectors + scan->candidates[c->next].span;
            }
        }
    }
    core_free(disk, path);
    return VHDX_OK;
}

/* The active sequence: its tail candidate, or -1. */
static int32_t find_active(const struct scan *scan)
{
    int32_t best = -1;
    uint64_t best_sequence = 0;

    for (uint32_t i = 0; i < scan->count; i++) {
        const struct candidate *head = &scan->candidates[i];
        int32_t tail;

        if (!head->valid || head->next >= 0)
            continue;       /* not the end of a chain */
        tail = candidate_at(scan, head->tail_slot);
        if (tail < 0 || !scan->candidates[tail].valid ||
            scan->candidates[tail].head != (int32_t)i ||
            scan->candidates[tail].span > scan->slots)
            continue;
        if (best < 0 || head->sequence > best_sequence) {
            best = tail;
            best_sequence = head->sequence;
        }
    }
    return best;
}

static int describe_active(struct vhdx_disk *disk, const struct scan *scan, int32_t tail,
                           struct log_sequence *active)
{
    const struct candidate *head = &scan->candidates[scan->candidates[tail].head];
    uint8_t h[64];
    int rc;

    active->tail = scan->candidates[tail].slot * LOG_SECTOR_SIZE;
    active->entries = 1;
    for (int32_t x = tail; x != scan->candidates[tail].head; x = scan->candidates[x].next)
        active->entries++;
    active->head_sequence = head->sequence;
    rc = file_read(disk, disk->headers.current.log_offset + (uint64_t)head->slot * LOG_SECTOR_SIZE,
                   h, sizeof h);
    if (rc)
        return rc;
    active->flushed_file_offset = get_le64(h + LE_FLUSHED_OFFSET);
    active->last_file_offset = get_le64(h + LE_LAST_OFFSET);
    return VHDX_OK;
}

int logscan_find(struct vhdx_disk *disk, struct log_sequence *active)
{
    const struct vhdx_header *h = &disk->headers.current;
    struct scan scan;
    int32_t tail;
    int rc;

    mem_zero(&scan, sizeof scan);
    if (h->log_length < LOG_SECTOR_SIZE)
        return fail(disk, VHDX_E_LOG_NO_SEQUENCE, 0, 0, NULL);
    scan.guid = &h->log_guid;
    scan.slots = h->log_length / LOG_SECTOR_SIZE;
    scan.prefix = core_alloc(disk, ((size_t)scan.slots + 1) * sizeof *scan.prefix);
    if (!scan.prefix)
        return disk->report.diag.code;
    rc = read_log(disk, &scan);
    if (rc)
        goto out;
    for (uint32_t i = 0; i < scan.count; i++) {
        if (scan.candidates[i].valid && !checksum_ok(&scan, &scan.candidates[i]))
            scan.candidates[i].valid = false;
    }
    rc = link_entries(disk, &scan);
    if (rc)
        goto out;
    tail = find_active(&scan);
    if (tail < 0) {
        rc = fail(disk, VHDX_E_LOG_NO_SEQUENCE, 0, 0, NULL);
        goto out;
    }
    rc = describe_active(disk, &scan, tail, active);
out:
    core_free(disk, scan.candidates);
    core_free(disk, scan.prefix);
    return rc;
}

int logscan_walk(struct vhdx_disk *disk, const struct log_sequence *active,
                 log_visit_fn visit, void *context)
{
    const struct vhdx_header *h = &disk->headers.current;
    uint8_t *sector = core_alloc(disk, LOG_SECTOR_SIZE);
    uint32_t position = active->tail;
    int rc = VHDX_OK;

    if (!sector)
        return disk->report.diag.code;
    for (uint32_t e = 0; e < active->entries && !rc; e++) {
        uint64_t entry_sequence, last_file_offset;
        uint32_t count, length, desc_sectors, loaded = 0, data_index = 0;

        rc = file_read(disk, h->log_offset + position, sector, LOG_SECTOR_SIZE);
        if (rc)
            break;
        length = get_le32(sector + LE_ENTRY_LENGTH);
        entry_sequence = get_le64(sector + LE_SEQUENCE);
        count = get_le32(sector + LE_DESCRIPTOR_COUNT);
        last_file_offset = get_le64(sector + LE_LAST_OFFSET);
        desc_sectors = (uint32_t)descriptor_sectors(count);
        for (uint32_t k = 0; k < count && !rc; k++) {
            uint32_t in_entry = (k + HEADER_DESCRIPTORS) / DESCRIPTORS_PER_SECTOR;
            const uint8_t *d;
            struct log_descriptor descriptor;

            if (in_entry != loaded) {
                rc = file_read(disk, h->log_offset + (position + (uint64_t)in_entry *
                                                      LOG_SECTOR_SIZE) % h->log_length,
                               sector, LOG_SECTOR_SIZE);
                if (rc)
                    break;
                loaded = in_entry;
            }
            d = sector + (k + HEADER_DESCRIPTORS) % DESCRIPTORS_PER_SECTOR * DESCRIPTOR_SIZE;
            mem_zero(&descriptor, sizeof descriptor);
            descriptor.entry_sequence = entry_sequence;
            descriptor.entry_last_file_offset = last_file_offset;
            descriptor.zero = mem_equal(d, "zero", 4);
            descriptor.file_offset = get_le64(d + D_FILE_OFFSET);
            if (descriptor.zero) {
                descriptor.length = get_le64(d + D_ZERO_LENGTH);
            } else {
                descriptor.length = LOG_SECTOR_SIZE;
                descriptor.data_position = (uint32_t)((position + (uint64_t)(desc_sectors +
                                             data_index++) * LOG_SECTOR_SIZE) % h->log_length);
                mem_copy(descriptor.leading, d + D_LEADING_BYTES, 8);
                mem_copy(descriptor.trailing, d + D_TRAILING_BYTES, 4);
            }
            rc = visit(disk, context, &descriptor);
        }
        position = (uint32_t)(((uint64_t)position + length) % h->log_length);
    }
    core_free(disk, sector);
    return rc;
}

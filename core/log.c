/*
 * log.c - the metadata log (spec 2.3): finding and replaying the active sequence at
 * open, and writing BAT updates through it.
 *
 * Replay.  The log is a circular buffer of 4 KiB sectors.  Every 4 KiB position that
 * starts a fully valid entry (signature, length, CRC over the whole entry, LogGuid,
 * descriptor and data-sector sequence numbers) is a node; an entry links to the valid
 * entry that immediately follows it when that one's sequence number is one higher.
 * Following links from any entry ends at its sequence's head.  A head h is the head of a
 * valid sequence when h.Tail names an entry whose chain ends at h and the entries from
 * tail to head fit in the log; among those the highest head sequence number wins
 * (spec 2.3.2, 2.3.3).  This visits each entry a bounded number of times, replays a
 * sequence that wraps around the end of the buffer whole (trap T9), and lets a torn or
 * stale entry end a sequence instead of failing the open.
 *
 * Writing.  BAT changes collect in memory and reach the file at vhdx_flush():
 * flush (payload data durable before the BAT that points at it), write one entry holding
 * every dirty BAT sector, flush, then write the sectors in place.  The in-place writes
 * are made durable by the next flush, which must happen before the next entry may
 * claim the log (its Tail is itself), or at close, which then marks the log empty.
 */
#include "vhdx_int.h"

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

struct log_entry {
    uint32_t position;              /* offset of the entry in the log */
    uint32_t length;
    uint32_t tail;
    uint32_t descriptor_count;
    uint64_t sequence;
    uint64_t flushed_file_offset;
    uint64_t last_file_offset;
    int32_t next;                   /* following entry of the sequence, or -1 */
    int32_t head;                   /* last entry reached by following next */
    uint64_t span;                  /* bytes from this entry to the end of its head */
};

struct log_scan {
    const uint8_t *log;             /* the whole log region */
    uint32_t length;
    uint64_t checksum_budget;       /* bytes we are still willing to checksum */
    const struct vhdx_guid *guid;
    struct log_entry *entries;
    uint32_t entry_count;
    int32_t *entry_at;              /* per 4 KiB position: entry index or -1 */
};

/* Descriptor sectors of an entry with `descriptors` descriptors: the first sector's
 * 64-byte header takes the room of two descriptors. */
static uint64_t descriptor_sectors(uint64_t descriptors)
{
    return (descriptors + 2 + DESCRIPTORS_PER_SECTOR - 1) / DESCRIPTORS_PER_SECTOR;
}

/* Byte `offset` of the entry at `position`; sectors never straddle the buffer's end. */
static const uint8_t *entry_byte(const struct log_scan *scan, uint32_t position,
                                 uint64_t offset)
{
    return scan->log + (position + offset) % scan->length;
}

static const uint8_t *descriptor_at(const struct log_scan *scan, uint32_t position,
                                    uint64_t index)
{
    return entry_byte(scan, position, (index + 2) * DESCRIPTOR_SIZE);
}

static uint32_t entry_checksum(const struct log_scan *scan, uint32_t position,
                               uint32_t length)
{
    uint32_t first = scan->length - position < length ? scan->length - position : length;

    /* The part up to the end of the buffer, then the part wrapped to its start. */
    return vhdx_crc32c(crc_with_zero_field(scan->log + position, first), scan->log,
                       length - first);
}

/* Spec 2.3.1: is there a whole, valid entry of this log at `position`? */
static bool entry_parse(struct log_scan *scan, uint32_t position,
                        struct log_entry *e)
{
    const uint8_t *h = scan->log + position;
    uint64_t sectors, data_sector;
    struct vhdx_guid guid;

    if (!mem_equal(h, "loge", 4))
        return false;
    e->position = position;
    e->length = get_le32(h + LE_ENTRY_LENGTH);
    e->tail = get_le32(h + LE_TAIL);
    e->sequence = get_le64(h + LE_SEQUENCE);
    e->descriptor_count = get_le32(h + LE_DESCRIPTOR_COUNT);
    e->flushed_file_offset = get_le64(h + LE_FLUSHED_OFFSET);
    e->last_file_offset = get_le64(h + LE_LAST_OFFSET);
    guid_read(&guid, h + LE_LOG_GUID);
    if (!guid_equal(&guid, scan->guid) || e->length == 0 || e->length % LOG_SECTOR_SIZE ||
        e->length > scan->length || e->tail % LOG_SECTOR_SIZE || e->tail >= scan->length ||
        e->sequence == 0)
        return false;
    sectors = e->length / LOG_SECTOR_SIZE;
    data_sector = descriptor_sectors(e->descriptor_count);
    if (data_sector > sectors)
        return false;
    if (scan->checksum_budget < e->length)
        return false;
    scan->checksum_budget -= e->length;
    if (get_le32(h + LE_CHECKSUM) != entry_checksum(scan, position, e->length))
        return false;
    for (uint64_t k = 0; k < e->descriptor_count; k++) {
        const uint8_t *d = descriptor_at(scan, position, k);

        if (get_le64(d + D_SEQUENCE) != e->sequence || get_le64(d + D_FILE_OFFSET) % LOG_SECTOR_SIZE)
            return false;
        if (mem_equal(d, "zero", 4)) {
            if (get_le64(d + D_ZERO_LENGTH) % LOG_SECTOR_SIZE)
                return false;
        } else if (mem_equal(d, "desc", 4)) {
            const uint8_t *s;

            if (data_sector >= sectors)
                return false;
            s = entry_byte(scan, position, data_sector * LOG_SECTOR_SIZE);
            if (!mem_equal(s, "data", 4) || get_le32(s + DS_SEQUENCE_HIGH) != (uint32_t)(e->sequence >> 32) ||
                get_le32(s + DS_SEQUENCE_LOW) != (uint32_t)e->sequence)
                return false;
            data_sector++;
        } else {
            return false;
        }
    }
    return true;
}

/* Link entries into chains and find each one's head (no recursion, each entry once). */
static int link_entries(struct vhdx_disk *disk, struct log_scan *scan)
{
    int32_t *path;
    uint32_t n = scan->entry_count;

    for (uint32_t i = 0; i < n; i++) {
        struct log_entry *e = &scan->entries[i];
        uint32_t next_position = (uint32_t)(((uint64_t)e->position + e->length) % scan->length);
        int32_t next = scan->entry_at[next_position / LOG_SECTOR_SIZE];

        e->head = -1;
        e->next = next >= 0 && scan->entries[next].sequence == e->sequence + 1 ? next : -1;
    }
    path = core_alloc(disk, (n ? n : 1) * sizeof *path);
    if (!path)
        return disk->diag.code;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t depth = 0;
        int32_t x = (int32_t)i;

        /* Sequence numbers rise along next links, so the walk ends. */
        while (x >= 0 && scan->entries[x].head < 0) {
            path[depth++] = x;
            x = scan->entries[x].next;
        }
        while (depth--) {
            struct log_entry *e = &scan->entries[path[depth]];

            if (e->next < 0) {
                e->head = path[depth];
                e->span = e->length;
            } else {
                e->head = scan->entries[e->next].head;
                e->span = e->length + scan->entries[e->next].span;
            }
        }
    }
    core_free(disk, path);
    return VHDX_OK;
}

/* The active sequence: its tail entry index, or -1. */
static int32_t find_active_sequence(const struct log_scan *scan)
{
    int32_t best = -1;
    uint64_t best_sequence = 0;

    for (uint32_t i = 0; i < scan->entry_count; i++) {
        const struct log_entry *head = &scan->entries[i];
        int32_t tail;

        if (head->next >= 0)
            continue;       /* not the end of a chain */
        tail = scan->entry_at[head->tail / LOG_SECTOR_SIZE];
        if (tail < 0 || scan->entries[tail].head != (int32_t)i ||
            scan->entries[tail].span > scan->length)
            continue;
        if (best < 0 || head->sequence > best_sequence) {
            best = tail;
            best_sequence = head->sequence;
        }
    }
    return best;
}

/* A descriptor may not touch the header section, the log itself, or overflow. */
static int check_descriptor_target(struct vhdx_disk *disk, const struct log_entry *e,
                                   uint64_t offset, uint64_t length, uint64_t *end)
{
    const struct vhdx_header *h = &disk->header;

    if (add_overflows(offset, length, end) || *end > MAX_VIRTUAL_SIZE * 2)
        return fail(disk, VHDX_E_LOG_DESCRIPTOR, e->sequence, offset, "which overflows");
    if (offset < HEADER_SECTION_SIZE)
        return fail(disk, VHDX_E_LOG_DESCRIPTOR, e->sequence, offset,
                    "inside the header section");
    if (ranges_overlap(offset, length, h->log_offset, h->log_length))
        return fail(disk, VHDX_E_LOG_DESCRIPTOR, e->sequence, offset, "inside the log");
    return VHDX_OK;
}

/*
 * Visit every descriptor of the sequence from `tail` in order.  With `apply` false it
 * only validates targets and measures; otherwise it writes (in place) or records the
 * overlay (read-only).  Data sectors are rebuilt inside the log copy itself: their first
 * 8 and last 4 bytes come from the descriptor (spec 2.3.1.4).
 */
static int walk_sequence(struct vhdx_disk *disk, struct log_scan *scan, int32_t tail,
                         bool apply, uint64_t *max_end, uint32_t *runs)
{
    for (int32_t x = tail; x >= 0; x = scan->entries[x].next) {
        const struct log_entry *e = &scan->entries[x];
        uint64_t data_sector = descriptor_sectors(e->descriptor_count);

        for (uint64_t k = 0; k < e->descriptor_count; k++) {
            const uint8_t *d = descriptor_at(scan, e->position, k);
            bool is_zero = mem_equal(d, "zero", 4);
            uint64_t offset = get_le64(d + D_FILE_OFFSET), end;
            uint64_t length = is_zero ? get_le64(d + D_ZERO_LENGTH) : LOG_SECTOR_SIZE;
            uint8_t *sector = NULL;
            int rc;

            if (!is_zero)
                sector = (uint8_t *)entry_byte(scan, e->position, data_sector++ * LOG_SECTOR_SIZE);
            rc = check_descriptor_target(disk, e, offset, length, &end);
            if (rc)
                return rc;
            if (*max_end < end)
                *max_end = end;
            if (!apply || length == 0)
                continue;
            if (sector) {
                mem_copy(sector, d + D_LEADING_BYTES, 8);
                mem_copy(sector + DS_SEQUENCE_LOW, d + D_TRAILING_BYTES, 4);
            }
            if (!disk->writable) {
                struct overlay_run *run = &disk->overlay[(*runs)++];

                run->offset = offset;
                run->length = length;
                run->data = sector;
                continue;
            }
            if (end > disk->real_file_size && (rc = file_grow(disk, end)))
                return rc;
            if (sector) {
                rc = file_write(disk, offset, sector, LOG_SECTOR_SIZE);
            } else {
                rc = write_zeros(disk, offset, length);
            }
            if (rc)
                return rc;
        }
        if (x == scan->entries[tail].head)
            break;
    }
    return VHDX_OK;
}

static int replay(struct vhdx_disk *disk, struct log_scan *scan, int32_t tail)
{
    const struct log_entry *head = &scan->entries[scan->entries[tail].head];
    uint64_t max_end = 0, file_end;
    uint32_t runs = 0, entries = 0;
    struct vhdx_guid clean;
    int rc;

    for (int32_t x = tail; x >= 0; x = scan->entries[x].next) {
        entries++;
        if (x == scan->entries[tail].head)
            break;
    }
    /* A truncated file has lost data the log says was durable (spec 2.3.3). */
    if (disk->real_file_size < head->flushed_file_offset)
        return fail(disk, VHDX_E_LOG_TRUNCATED, disk->real_file_size,
                    head->flushed_file_offset, NULL);
    rc = walk_sequence(disk, scan, tail, false, &max_end, &runs);
    if (rc)
        return rc;
    if (head->last_file_offset > MAX_VIRTUAL_SIZE * 2)
        return fail(disk, VHDX_E_LOG_DESCRIPTOR, head->sequence, head->last_file_offset,
                    "as the file size to reach, which is absurd");
    file_end = max_end > head->last_file_offset ? max_end : head->last_file_offset;

    if (disk->writable) {
        /* Spec 2.2.2.1: a new FileWriteGuid reaches the disk before the log is replayed.
         * DataWriteGuid stays: replay restores what the disk held (a child's linkage). */
        rc = header_update(disk, false, &disk->header.log_guid);
        if (!rc)
            rc = walk_sequence(disk, scan, tail, true, &max_end, &runs);
        if (!rc)
            rc = file_grow(disk, file_end);
        if (!rc)
            rc = file_flush(disk);
        mem_zero(&clean, sizeof clean);
        if (!rc)
            rc = header_update(disk, false, &clean);
        if (rc)
            return rc;
        disk->log_state = VHDX_LOG_REPLAYED;
    } else {
        uint64_t descriptors = 0;

        for (int32_t x = tail; x >= 0; x = scan->entries[x].next) {
            descriptors += scan->entries[x].descriptor_count;
            if (x == scan->entries[tail].head)
                break;
        }
        disk->overlay = core_alloc(disk, (size_t)(descriptors ? descriptors : 1) *
                                             sizeof *disk->overlay);
        if (!disk->overlay)
            return disk->diag.code;
        rc = walk_sequence(disk, scan, tail, true, &max_end, &runs);
        if (rc)
            return rc;
        disk->overlay_count = runs;
        disk->overlay_low = UINT64_MAX;
        for (uint32_t i = 0; i < runs; i++) {
            if (disk->overlay[i].offset < disk->overlay_low)
                disk->overlay_low = disk->overlay[i].offset;
            if (disk->overlay[i].offset + disk->overlay[i].length > disk->overlay_high)
                disk->overlay_high = disk->overlay[i].offset + disk->overlay[i].length;
        }
        if (disk->file_size < file_end)
            disk->file_size = file_end;
        disk->log_state = VHDX_LOG_REPLAYED_IN_MEMORY;
    }
    disk->log_entries_replayed = entries;
    disk->log_head_sequence = head->sequence;
    disk->replayed_log_guid = *scan->guid;
    return VHDX_OK;
}

int log_replay(struct vhdx_disk *disk)
{
    const struct vhdx_header *h = &disk->header;
    struct log_scan scan;
    uint8_t *log = NULL;
    uint32_t slots;
    int32_t tail;
    int rc;

    if (vhdx_guid_is_zero(&h->log_guid))
        return VHDX_OK;
    mem_zero(&scan, sizeof scan);
    if (h->log_length == 0)
        return fail(disk, VHDX_E_LOG_NO_SEQUENCE, 0, 0, NULL);
    slots = h->log_length / LOG_SECTOR_SIZE;
    log = core_alloc(disk, h->log_length);
    scan.entry_at = log ? core_alloc(disk, slots * sizeof *scan.entry_at) : NULL;
    if (!scan.entry_at) {
        rc = disk->diag.code;
        goto out;
    }
    rc = file_read(disk, h->log_offset, log, h->log_length);
    if (rc)
        goto out;
    scan.log = log;
    scan.length = h->log_length;
    scan.guid = &h->log_guid;
    /*
     * Entries of a real log barely overlap, so checksumming every candidate costs about
     * the log's size.  A hostile log full of long overlapping entry headers would cost
     * (log size)^2 / 4 KiB; the budget turns that into a refusal instead of a hang.
     */
    scan.checksum_budget = 16 * (uint64_t)h->log_length + 64 * (uint64_t)MIB;

    /* Every 4 KiB position may start an entry; keep the valid ones. */
    scan.entries = core_alloc(disk, slots * sizeof *scan.entries);
    if (!scan.entries) {
        rc = disk->diag.code;
        goto out;
    }
    for (uint32_t slot = 0; slot < slots; slot++) {
        scan.entry_at[slot] = -1;
        if (entry_parse(&scan, slot * LOG_SECTOR_SIZE, &scan.entries[scan.entry_count]))
            scan.entry_at[slot] = (int32_t)scan.entry_count++;
    }
    rc = link_entries(disk, &scan);
    if (rc)
        goto out;
    tail = find_active_sequence(&scan);
    if (tail < 0) {
        rc = fail(disk, VHDX_E_LOG_NO_SEQUENCE, 0, 0, NULL);
        goto out;
    }
    rc = replay(disk, &scan, tail);
    if (!rc && !disk->writable) {
        disk->overlay_memory = log;     /* the overlay points into the log copy */
        log = NULL;
    }
    if (!rc)
        note_text(disk, VHDX_LOG_INFO, "replayed %a log entries (head sequence %b) %s",
                  disk->log_entries_replayed, disk->log_head_sequence,
                  disk->writable ? "into the file" : "in memory (read-only)");
out:
    core_free(disk, scan.entries);
    core_free(disk, scan.entry_at);
    core_free(disk, log);
    return rc;
}

bool overlay_covers(const struct vhdx_disk *disk, uint64_t offset, uint64_t len)
{
    return ranges_overlap(offset, len, disk->overlay_low, disk->overlay_high - disk->overlay_low);
}

/* Patch replayed updates over file bytes just read; later runs win. */
void overlay_apply(const struct vhdx_disk *disk, uint64_t offset, uint8_t *buf, size_t len)
{
    for (uint32_t i = 0; i < disk->overlay_count; i++) {
        const struct overlay_run *run = &disk->overlay[i];
        uint64_t from, to;

        if (!ranges_overlap(offset, len, run->offset, run->length))
            continue;
        from = run->offset > offset ? run->offset : offset;
        to = run->offset + run->length < offset + len ? run->offset + run->length : offset + len;
        if (run->data)
            mem_copy(buf + (from - offset), run->data + (from - run->offset), (size_t)(to - from));
        else
            mem_zero(buf + (from - offset), (size_t)(to - from));
    }
}

/* ----------------------------------------------------------------------------------- */
/* Writing BAT updates through the log.                                                */

static bool sector_dirty(const struct vhdx_disk *disk, uint64_t sector)
{
    return disk->bat_dirty[sector / 8] & (1u << (sector % 8));
}

/* Copy `length` bytes into the log at `position`, wrapping around its end. */
static int log_write_wrapped(struct vhdx_disk *disk, uint32_t position, const uint8_t *data,
                             uint32_t length)
{
    uint32_t log_length = disk->header.log_length;
    uint32_t first = log_length - position < length ? log_length - position : length;
    int rc;

    rc = file_write(disk, disk->header.log_offset + position, data, first);
    if (!rc && first < length)
        rc = file_write(disk, disk->header.log_offset, data + first, length - first);
    return rc;
}

/*
 * Build and write one entry holding as many dirty BAT sectors as fit in `max_sectors`
 * log sectors, taking them in order from *next_dirty.  On return *next_dirty is past the
 * last sector taken and *taken says how many there were.
 */
static int write_entry(struct vhdx_disk *disk, uint32_t position, uint32_t max_sectors,
                       uint64_t *next_dirty, uint64_t *first_sector, uint32_t *taken)
{
    const uint32_t per_sector = LOG_SECTOR_SIZE / 8;
    uint8_t *entry = disk->log_buffer;
    uint64_t sequence = disk->log_next_sequence, s;
    uint32_t fit = 0, count = 0, desc_sectors, length;

    /* Each BAT sector costs a descriptor and a data sector. */
    for (s = *next_dirty; s < disk->bat_sectors; s++) {
        if (sector_dirty(disk, s)) {
            if (descriptor_sectors(fit + 1) + fit + 1 > max_sectors)
                break;
            fit++;
        }
    }
    *taken = fit;
    if (fit == 0)
        return VHDX_OK;
    desc_sectors = (uint32_t)descriptor_sectors(fit);
    length = (desc_sectors + fit) * LOG_SECTOR_SIZE;
    mem_zero(entry, length);

    mem_copy(entry, "loge", 4);
    put_le32(entry + LE_ENTRY_LENGTH, length);
    put_le32(entry + LE_TAIL, position);        /* everything older is applied and flushed */
    put_le64(entry + LE_SEQUENCE, sequence);
    put_le32(entry + LE_DESCRIPTOR_COUNT, fit);
    mem_copy(entry + LE_LOG_GUID, disk->session_log_guid.bytes, 16);
    /* The current size is durable (we just flushed); the file must reach alloc_end. */
    put_le64(entry + LE_FLUSHED_OFFSET, disk->real_file_size & ~(uint64_t)(MIB - 1));
    put_le64(entry + LE_LAST_OFFSET, disk->alloc_end);

    for (s = *next_dirty; count < fit; s++) {
        uint8_t *d = entry + (count + 2) * DESCRIPTOR_SIZE;
        uint8_t *data = entry + (uint64_t)(desc_sectors + count) * LOG_SECTOR_SIZE;

        if (!sector_dirty(disk, s))
            continue;
        if (count == 0)
            *first_sector = s;
        /* The sector exactly as it will stand in the file, little-endian. */
        for (uint32_t i = 0; i < per_sector; i++)
            put_le64(data + 8 * i, disk->bat[s * per_sector + i]);
        mem_copy(d, "desc", 4);
        mem_copy(d + D_TRAILING_BYTES, data + DS_SEQUENCE_LOW, 4);
        mem_copy(d + D_LEADING_BYTES, data, 8);
        put_le64(d + D_FILE_OFFSET, disk->bat_offset + s * LOG_SECTOR_SIZE);
        put_le64(d + D_SEQUENCE, sequence);
        mem_copy(data, "data", 4);
        put_le32(data + DS_SEQUENCE_HIGH, (uint32_t)(sequence >> 32));
        put_le32(data + DS_SEQUENCE_LOW, (uint32_t)sequence);
        count++;
    }
    put_le32(entry + LE_CHECKSUM, vhdx_crc32c(0, entry, length));
    *next_dirty = s;
    return log_write_wrapped(disk, position, entry, length);
}

/*
 * Mark the log empty (every entry is applied and flushed by now) so the next entry may
 * use all of it.  Needed only when the last entry leaves too little room for the next.
 */
static int log_reset(struct vhdx_disk *disk)
{
    struct vhdx_guid clean;
    int rc;

    mem_zero(&clean, sizeof clean);
    if (disk->log_active) {
        rc = header_update(disk, false, &clean);
        if (rc)
            return rc;
        disk->log_active = false;
    }
    disk->log_head_position = 0;
    disk->log_head_length = 0;
    return file_random_guid(disk, &disk->session_log_guid);
}

/* Write the sectors an entry logged to their home in the BAT. */
static int apply_entry(struct vhdx_disk *disk, uint32_t desc_sectors, uint32_t count)
{
    const uint8_t *entry = disk->log_buffer;
    int rc;

    for (uint32_t k = 0; k < count; k++) {
        const uint8_t *d = entry + (k + 2) * DESCRIPTOR_SIZE;
        uint8_t *data = disk->log_buffer + (uint64_t)(desc_sectors + k) * LOG_SECTOR_SIZE;

        /* Rebuild the sector in place from the data sector and the descriptor. */
        mem_copy(data, d + D_LEADING_BYTES, 8);
        mem_copy(data + DS_SEQUENCE_LOW, d + D_TRAILING_BYTES, 4);
        rc = file_write(disk, get_le64(d + D_FILE_OFFSET), data, LOG_SECTOR_SIZE);
        if (rc)
            return rc;
    }
    return VHDX_OK;
}

int log_commit_bat(struct vhdx_disk *disk)
{
    uint32_t log_length = disk->header.log_length;
    uint64_t next_dirty = 0;
    int rc;

    if (log_length < 2 * LOG_SECTOR_SIZE)
        return fail(disk, VHDX_E_LOG_FULL, log_length, 2 * LOG_SECTOR_SIZE, NULL);
    if (!disk->log_buffer) {
        disk->log_buffer = core_alloc(disk, log_length);
        if (!disk->log_buffer)
            return disk->diag.code;
    }
    if (!disk->log_active && vhdx_guid_is_zero(&disk->session_log_guid)) {
        rc = file_random_guid(disk, &disk->session_log_guid);
        if (rc)
            return rc;
        disk->log_next_sequence = disk->log_head_sequence + 1;
    }
    while (next_dirty < disk->bat_sectors) {
        /* Payload data, and the last entry's in-place writes, become durable first. */
        uint32_t position = (disk->log_head_position + disk->log_head_length) % log_length;
        uint32_t room = (log_length - disk->log_head_length) / LOG_SECTOR_SIZE;
        uint64_t first_sector = 0;
        uint32_t taken;

        rc = file_flush(disk);
        if (rc)
            return rc;
        disk->data_unflushed = false;
        disk->inplace_unflushed = false;
        rc = write_entry(disk, position, room, &next_dirty, &first_sector, &taken);
        if (rc)
            return rc;
        if (taken == 0) {
            if (disk->log_head_length == 0)
                return fail(disk, VHDX_E_LOG_FULL, log_length, 2 * LOG_SECTOR_SIZE, NULL);
            rc = log_reset(disk);
            if (rc)
                return rc;
            continue;
        }
        rc = file_flush(disk);
        if (rc)
            return rc;
        /* Publish the session's LogGuid only once the log holds an entry carrying it:
         * a header naming a LogGuid the log lacks would make the file unopenable. */
        if (!disk->log_active) {
            rc = header_update(disk, false, &disk->session_log_guid);
            if (rc)
                return rc;
            disk->log_active = true;
        }
        rc = apply_entry(disk, (uint32_t)descriptor_sectors(taken), taken);
        if (rc)
            return rc;
        disk->inplace_unflushed = true;
        disk->log_head_position = position;
        disk->log_head_length = (uint32_t)(descriptor_sectors(taken) + taken) * LOG_SECTOR_SIZE;
        disk->log_next_sequence++;
        for (uint64_t s = first_sector; s < next_dirty; s++)
            disk->bat_dirty[s / 8] &= (uint8_t)~(1u << (s % 8));
        /* Skip past clean sectors so the loop ends when nothing is left. */
        while (next_dirty < disk->bat_sectors && !sector_dirty(disk, next_dirty))
            next_dirty++;
    }
    return VHDX_OK;
}

int log_close(struct vhdx_disk *disk)
{
    struct vhdx_guid clean;
    int rc = VHDX_OK;

    if (disk->inplace_unflushed || disk->data_unflushed) {
        rc = file_flush(disk);
        if (rc)
            return rc;
        disk->inplace_unflushed = false;
        disk->data_unflushed = false;
    }
    if (disk->log_active) {
        mem_zero(&clean, sizeof clean);
        rc = header_update(disk, false, &clean);
        if (!rc)
            disk->log_active = false;
    }
    return rc;
}

/*
 * overlay.c - a replayed log kept in memory (see overlay.h).
 *
 * Descriptors arrive in log order and may overlap (a later one wins where they do).
 * They are collected in batches; a batch is reduced to its final effect by a sweep over
 * its start and end points that keeps, at each point, the newest descriptor covering
 * it (a max-heap of descriptor numbers, O(n log n)); the result is laid over the runs
 * kept so far by one linear merge.  Adjacent zero runs merge, so two million zero
 * descriptors over one disk cost a handful of runs.  Every coordinate is a multiple of
 * 4 KiB (spec 2.3.1.2-3), so a data sector is never cut: it is kept or covered whole.
 */
#include "overlay.h"

#include "disk.h"

struct sweep_event {
    uint64_t position;
    uint32_t run;                   /* index in the batch: higher is newer */
    bool starts;
};

static bool event_before(const void *a, const void *b)
{
    const struct sweep_event *x = a, *y = b;

    return x->position < y->position;
}

/* Append a run to `out`, merging it into the previous one when both are zeros. */
static void emit(struct overlay_run *out, uint32_t *n, const struct overlay_run *run)
{
    struct overlay_run *last = *n ? &out[*n - 1] : NULL;

    if (run->start >= run->end)
        return;
    if (last && last->end == run->start && last->data_position == OVERLAY_ZEROS &&
        run->data_position == OVERLAY_ZEROS) {
        last->end = run->end;
        return;
    }
    out[(*n)++] = *run;
}

/* Max-heap of batch indices (the newest covering descriptor is on top). */
static void heap_push(uint32_t *heap, uint32_t *n, uint32_t value)
{
    uint32_t i = (*n)++;

    while (i && heap[(i - 1) / 2] < value) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = value;
}

static void heap_pop(uint32_t *heap, uint32_t *n)
{
    uint32_t value = heap[--*n], i = 0;

    for (;;) {
        uint32_t child = 2 * i + 1;

        if (child >= *n)
            break;
        if (child + 1 < *n && heap[child + 1] > heap[child])
            child++;
        if (heap[child] <= value)
            break;
        heap[i] = heap[child];
        i = child;
    }
    if (*n)
        heap[i] = value;
}

/* The final effect of the batch alone, sorted and disjoint, into `out` (2n + 1 runs). */
static int reduce_batch(struct vhdx_disk *disk, struct overlay_run *out, uint32_t *out_count)
{
    struct overlay *o = &disk->overlay;
    uint32_t n = o->batch_count, events = 2 * n, heap_size = 0;
    struct sweep_event *event = core_alloc(disk, (size_t)events * sizeof *event);
    uint32_t *heap = core_alloc(disk, (size_t)n * sizeof *heap);
    uint8_t *ended = core_alloc(disk, (size_t)n / 8 + 1);
    uint64_t previous = 0;
    int rc = VHDX_OK;

    *out_count = 0;
    if (!event || !heap || !ended) {
        rc = disk->report.diag.code;
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        event[2 * i] = (struct sweep_event){ o->batch[i].start, i, true };
        event[2 * i + 1] = (struct sweep_event){ o->batch[i].end, i, false };
    }
    sort_records(event, events, sizeof *event, event_before);
    for (uint32_t e = 0; e < events;) {
        uint64_t here = event[e].position;

        /* [previous, here) belongs to the newest descriptor still covering it. */
        if (heap_size && here > previous) {
            struct overlay_run piece = o->batch[heap[0]];

            piece.start = previous;
            piece.end = here;
            emit(out, out_count, &piece);
        }
        for (; e < events && event[e].position == here; e++) {
            if (event[e].starts)
                heap_push(heap, &heap_size, event[e].run);
            else
                ended[event[e].run / 8] |= (uint8_t)(1u << (event[e].run % 8));
        }
        while (heap_size && (ended[heap[0] / 8] & (1u << (heap[0] % 8))))
            heap_pop(heap, &heap_size);
        previous = here;
    }
out:
    core_free(disk, ended);
    core_free(disk, heap);
    core_free(disk, event);
    return rc;
}

/* Lay `fresh` (newer, sorted, disjoint) over the kept runs. */
static int merge_runs(struct vhdx_disk *disk, const struct overlay_run *fresh,
                      uint32_t fresh_count)
{
    struct overlay *o = &disk->overlay;
    uint64_t capacity = (uint64_t)o->count + 2 * (uint64_t)fresh_count;
    struct overlay_run *out, current;
    uint32_t n = 0, i = 0;

    /* Each fresh run adds itself and splits at most one older run in two. */
    if (capacity > OVERLAY_MAX_RUNS + 2 * (uint64_t)OVERLAY_BATCH)
        return fail(disk, VHDX_E_TOO_BIG, capacity * sizeof *out,
                    (uint64_t)OVERLAY_MAX_RUNS * sizeof *out, "replaying the log in memory");
    out = core_alloc(disk, (size_t)(capacity ? capacity : 1) * sizeof *out);
    if (!out)
        return disk->report.diag.code;
    if (o->count)
        current = o->runs[0];
    for (uint32_t j = 0; j < fresh_count; j++) {
        const struct overlay_run *f = &fresh[j];

        /* Older parts before this run stay. */
        while (i < o->count && current.start < f->start) {
            struct overlay_run piece = current;

            piece.end = min_u64(current.end, f->start);
            emit(out, &n, &piece);
            if (current.end > f->start) {
                current.start = f->start;
                break;
            }
            if (++i < o->count)
                current = o->runs[i];
        }
        emit(out, &n, f);
        /* Older parts under it go. */
        while (i < o->count && current.start < f->end) {
            if (current.end > f->end) {
                current.start = f->end;
                break;
            }
            if (++i < o->count)
                current = o->runs[i];
        }
    }
    for (; i < o->count; i++) {
        emit(out, &n, &current);
        if (i + 1 < o->count)
            current = o->runs[i + 1];
    }
    core_free(disk, o->runs);
    o->runs = out;
    o->count = n;
    if (n > OVERLAY_MAX_RUNS)
        return fail(disk, VHDX_E_TOO_BIG, (uint64_t)n * sizeof *out,
                    (uint64_t)OVERLAY_MAX_RUNS * sizeof *out, "replaying the log in memory");
    return VHDX_OK;
}

static int merge_batch(struct vhdx_disk *disk)
{
    struct overlay *o = &disk->overlay;
    struct overlay_run *reduced;
    uint32_t reduced_count;
    int rc;

    if (!o->batch_count)
        return VHDX_OK;
    reduced = core_alloc(disk, (2 * (size_t)o->batch_count + 1) * sizeof *reduced);
    if (!reduced)
        return disk->report.diag.code;
    rc = reduce_batch(disk, reduced, &reduced_count);
    if (!rc)
        rc = merge_runs(disk, reduced, reduced_count);
    core_free(disk, reduced);
    o->batch_count = 0;
    return rc;
}

int overlay_add(struct vhdx_disk *disk, const struct log_descriptor *d)
{
    struct overlay *o = &disk->overlay;
    struct overlay_run *run;
    int rc;

    if (!d->length)
        return VHDX_OK;
    if (!o->batch) {
        o->batch = core_alloc(disk, OVERLAY_BATCH * sizeof *o->batch);
        if (!o->batch)
            return disk->report.diag.code;
    }
    if (o->batch_count == OVERLAY_BATCH) {
        rc = merge_batch(disk);
        if (rc)
            return rc;
    }
    run = &o->batch[o->batch_count++];
    run->start = d->file_offset;
    run->end = d->file_offset + d->length;      /* checked by replay */
    run->data_position = d->zero ? OVERLAY_ZEROS : d->data_position;
    mem_copy(run->leading, d->leading, sizeof run->leading);
    mem_copy(run->trailing, d->trailing, sizeof run->trailing);
    return VHDX_OK;
}

/* The first run that ends after `offset`. */
static uint32_t first_run_after(const struct overlay *o, uint64_t offset)
{
    uint32_t low = 0, high = o->count;

    while (low < high) {
        uint32_t mid = low + (high - low) / 2;

        if (o->runs[mid].end <= offset)
            low = mid + 1;
        else
            high = mid;
    }
    return low;
}

/* A data run's sector as it will stand in the file: the log's data sector, patched. */
static int load_sector(struct vhdx_disk *disk, const struct overlay_run *run)
{
    const struct vhdx_platform *base = &disk->file.platform;
    uint8_t *sector = disk->overlay.sector;
    int rc;

    rc = base->read(base->context, disk->headers.current.log_offset + run->data_position,
                    sector, LOG_SECTOR_SIZE);
    if (rc)
        return rc;
    mem_copy(sector, run->leading, sizeof run->leading);
    mem_copy(sector + LOG_SECTOR_SIZE - sizeof run->trailing, run->trailing,
             sizeof run->trailing);
    return VHDX_OK;
}

/* The view's read: the file (zeros past its real end), then the runs laid over it. */
static int view_read(void *context, uint64_t offset, void *buffer, size_t length)
{
    struct vhdx_disk *disk = context;
    const struct overlay *o = &disk->overlay;
    const struct vhdx_platform *base = &disk->file.platform;
    uint64_t real = disk->file.real_size, end = offset + length;
    uint8_t *out = buffer;
    int rc;

    if (offset < real) {
        size_t from_file = (size_t)(min_u64(end, real) - offset);

        rc = base->read(base->context, offset, out, from_file);
        if (rc)
            return rc;
        mem_zero(out + from_file, length - from_file);
    } else {
        mem_zero(out, length);
    }
    for (uint32_t i = first_run_after(o, offset); i < o->count && o->runs[i].start < end; i++) {
        const struct overlay_run *run = &o->runs[i];
        uint64_t from = max_u64(run->start, offset), to = min_u64(run->end, end);

        if (run->data_position == OVERLAY_ZEROS) {
            mem_zero(out + (from - offset), (size_t)(to - from));
            continue;
        }
        rc = load_sector(disk, run);
        if (rc)
            return rc;
        mem_copy(out + (from - offset), disk->overlay.sector + (from - run->start),
                 (size_t)(to - from));
    }
    return VHDX_OK;
}

int overlay_install(struct vhdx_disk *disk, uint64_t size)
{
    struct overlay *o = &disk->overlay;
    int rc;

    rc = merge_batch(disk);
    core_free(disk, o->batch);
    o->batch = NULL;
    if (rc)
        return rc;
    o->sector = core_alloc(disk, LOG_SECTOR_SIZE);
    if (!o->sector)
        return disk->report.diag.code;
    mem_zero(&o->view, sizeof o->view);
    o->view.context = disk;
    o->view.read = view_read;
    file_set_view(disk, &o->view, size);
    return VHDX_OK;
}

int overlay_apply(struct vhdx_disk *disk)
{
    const struct overlay *o = &disk->overlay;
    int rc;

    for (uint32_t i = 0; i < o->count; i++) {
        const struct overlay_run *run = &o->runs[i];

        if (run->data_position == OVERLAY_ZEROS) {
            rc = file_zero(disk, run->start, run->end - run->start);
        } else {
            rc = load_sector(disk, run);
            if (rc)
                return fail(disk, (enum vhdx_error)rc,
                            disk->headers.current.log_offset + run->data_position, 0,
                            "reading the log");
            rc = file_grow(disk, run->end);
            if (!rc)
                rc = file_write(disk, run->start, disk->overlay.sector, LOG_SECTOR_SIZE);
        }
        if (rc)
            return rc;
    }
    return VHDX_OK;
}

void overlay_release(struct vhdx_disk *disk)
{
    struct overlay *o = &disk->overlay;

    if (disk->file.io == &o->view)
        file_clear_view(disk);
    core_free(disk, o->sector);
    core_free(disk, o->batch);
    core_free(disk, o->runs);
    mem_zero(o, sizeof *o);
}

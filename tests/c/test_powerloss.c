/*
 * test_powerloss.c - cut the power at every platform write of a write workload and
 * check that what is left always opens, checks clean and holds the right data.
 *
 * Usage: test_powerloss IMAGE [--dump-every N DIR] [--junk-grow]
 *        test_powerloss --differencing [--junk-grow]
 *   IMAGE: an empty dynamic VHDX with 512-byte sectors (tests/powerloss.test makes it
 *   with qemu-img).  --dump-every writes every Nth crash image (after replay) to DIR so
 *   the suite can run `qemu-img check` on them.  --junk-grow: the platform's grow()
 *   leaves junk in the new bytes instead of zeros.  --differencing: the workload runs on
 *   a differencing child (made with vhdx_create) of a 64 MiB parent whose every sector
 *   is stamped: partial writes allocate PARTIALLY_PRESENT blocks and sector bitmaps, and
 *   every crash image is judged through the parent.
 *
 * The workload mixes writes with vhdx_write_zeroes (parts of blocks, whole blocks that
 * change state) and, on the dynamic disk, vhdx_discard of whole blocks.
 *
 * How: the workload runs once on a recording platform that keeps a trace of every
 * write, grow and flush.  For each cut point k (every write in the trace) and each of
 * three modes a crash image is rebuilt from the trace:
 *   drop     - only what the last completed platform flush made durable survives;
 *   tear     - the writes since then reach the disk in order, the k-th one torn at a
 *              512-byte boundary;
 *   reorder  - a random subset of the writes since the last flush, in random order,
 *              the last of them possibly torn.
 * The image must open read-only (log replayed in memory) and in check mode with no
 * problem, must replay in place when opened writable, and must then open clean.  Each
 * time every sector that the workload ever wrote, and the first sector of every block,
 * must hold either what it held at the last completed vhdx_flush, or the content of a
 * write issued after that flush - never anything else.  Sector contents identify the
 * write that produced them (write number and sector number are stamped in).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "vhdx.h"

#define SECTOR 512u
#define MAX_WRITES 1024
#define WORKLOAD_WRITES 300
/* The parent's sectors carry this tag; ordered before every write of the workload. */
#define PARENT_TAG 0xFFFFu

static bool differencing;

/*
 * Two platforms: one whose grow() zero-fills (like ftruncate), one whose grown bytes
 * hold junk (like an ESP reserve whose clusters held old data) - there the core must
 * zero new blocks itself.
 */
static bool grow_junk;
#define JUNK 0xEE

/* ---- The trace ------------------------------------------------------------------------ */

enum op_type { OP_WRITE, OP_GROW, OP_FLUSH };

struct op {
    enum op_type type;
    uint64_t offset;                /* write offset, or new size for grow */
    size_t length;
    uint8_t *data;
    int flushes_done;               /* vhdx_flush calls completed before this op */
    int writes_started;             /* vhdx_write calls started before this op (incl. current) */
};

/* The workload runs on an in-memory file whose hook records every write, grow and flush. */
struct trace {
    struct op *ops;
    size_t count, capacity;
    uint64_t size;                  /* the file's size as the trace has seen it grow */
    int flushes_done, writes_started;
};

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static struct op *trace_add(struct trace *t, enum op_type type)
{
    struct op *op;

    if (t->count == t->capacity) {
        t->capacity = t->capacity ? 2 * t->capacity : 1024;
        t->ops = realloc(t->ops, t->capacity * sizeof *t->ops);
        if (!t->ops)
            exit(2);
    }
    op = &t->ops[t->count++];
    memset(op, 0, sizeof *op);
    op->type = type;
    op->flushes_done = t->flushes_done;
    op->writes_started = t->writes_started;
    return op;
}

static void trace_event(void *context, const struct mem_event *e)
{
    struct trace *t = context;
    struct op *op;

    if (e->result != VHDX_OK)
        return;
    if (e->op == MEM_OP_WRITE) {
        op = trace_add(t, OP_WRITE);
        op->offset = e->offset;
        op->length = e->length;
        op->data = xmalloc(e->length);
        memcpy(op->data, e->data, e->length);
    } else if (e->op == MEM_OP_GROW && e->offset > t->size) {
        t->size = e->offset;
        trace_add(t, OP_GROW)->offset = e->offset;
    } else if (e->op == MEM_OP_FLUSH) {
        trace_add(t, OP_FLUSH);
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* New GUIDs draw from the workload's generator, so a run is one deterministic sequence. */
static int any_random(void *c, uint8_t bytes[16])
{
    (void)c;
    for (int i = 0; i < 16; i++)
        bytes[i] = (uint8_t)rng();
    return VHDX_OK;
}

/* The differencing variant's parent: written once, then only read. */
static struct mem_file parent_file;
#define PARENT_NAME "parent.vhdx"

static void platform_for(struct vhdx_platform *p, struct mem_file *file)
{
    file->quiet = true;
    if (differencing && file->sibling_count == 0)
        mem_file_add_sibling(file, PARENT_NAME, &parent_file);
    mem_file_platform(file, p);
    p->random = any_random;
}

/* ---- Crash images: the durable file plus some pending writes -------------------------- */

static void crash_grow(struct mem_file *image, uint64_t size)
{
    /* Crash images never shrink below the durable size. */
    if (size > image->image.size)
        mem_file_resize(image, size);
}

/* ---- The workload and its model ------------------------------------------------------- */

struct user_write {
    uint64_t sector, count;
    bool zeros;                     /* vhdx_write_zeroes or vhdx_discard: reads as zeros */
};

struct model {
    uint64_t sectors;               /* virtual disk size in sectors */
    uint64_t sectors_per_block;
    struct user_write writes[MAX_WRITES];
    int write_count;
    uint16_t *initial;              /* tag of each sector before the workload */
    uint16_t **at_flush;            /* per completed vhdx_flush: tag of each sector */
    int flush_count;
    uint16_t *current;              /* tag of each sector after the writes so far */
    uint8_t *ever_written;          /* sectors some write covers */
    uint64_t *checked;              /* the sectors verified at every cut */
    uint64_t checked_count;
};

/* A sector's content names the write (tag) and the sector; tag 0 is all zeros. */
static void fill_sector(uint8_t *p, uint16_t tag, uint64_t sector)
{
    uint64_t x = (uint64_t)tag * 0x100000001B3ull ^ sector * 0x9E3779B97F4A7C15ull;

    for (unsigned i = 0; i < SECTOR; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
    memcpy(p, &tag, 2);
    memcpy(p + 8, &sector, 8);
}

static bool sector_is(const uint8_t *p, uint16_t tag, uint64_t sector)
{
    static const uint8_t zero[SECTOR];
    uint8_t want[SECTOR];

    if (tag == 0)
        return !memcmp(p, zero, SECTOR);
    fill_sector(want, tag, sector);
    return !memcmp(p, want, SECTOR);
}

static uint16_t *tags_copy(const struct model *m, const uint16_t *tags)
{
    uint16_t *copy = xmalloc(m->sectors * sizeof *copy);

    memcpy(copy, tags, m->sectors * sizeof *copy);
    return copy;
}

static int run_workload(struct vhdx_disk *disk, struct trace *t, struct model *m)
{
    uint64_t blocks = m->sectors / m->sectors_per_block;
    uint8_t *buf = xmalloc(512 * SECTOR);
    int since_flush = 0, rc;

    for (int i = 0; i < WORKLOAD_WRITES; i++) {
        uint64_t count, sector;
        unsigned kind = (unsigned)(rng() % 10);
        uint16_t tag = (uint16_t)(i + 1);

        if (kind == 9 && rng() % 2) {   /* zeros, or a discard of whole blocks */
            bool whole = !differencing && rng() % 2;

            if (whole) {
                sector = (rng() % blocks) * m->sectors_per_block;
                count = m->sectors_per_block * (1 + rng() % 2);
            } else {
                sector = rng() % m->sectors;
                count = 1 + rng() % (2 * m->sectors_per_block);
            }
            if (sector + count > m->sectors)
                count = m->sectors - sector;
            for (uint64_t s = 0; s < count; s++) {
                m->current[sector + s] = 0;
                m->ever_written[sector + s] = 1;
            }
            m->writes[m->write_count] = (struct user_write){ sector, count, true };
            m->write_count++;
            t->writes_started++;
            rc = whole ? vhdx_discard(disk, sector, count)
                       : vhdx_write_zeroes(disk, sector, count);
            if (rc)
                return rc;
            goto flush;
        }
        if (kind < 5) {             /* somewhere new: allocates a block */
            sector = (rng() % blocks) * m->sectors_per_block + rng() % m->sectors_per_block;
            count = 1 + rng() % 64;
        } else if (kind < 6) {      /* across a block boundary */
            sector = (1 + rng() % (blocks - 1)) * m->sectors_per_block - 1 - rng() % 8;
            count = 2 + rng() % 32;
        } else if (kind < 9 && m->write_count) {   /* overwrite part of an earlier write */
            struct user_write *w = &m->writes[rng() % (unsigned)m->write_count];

            sector = w->sector + rng() % w->count;
            count = 1 + rng() % 16;
        } else {                    /* one 512-byte sector: part of a 4 KiB physical one */
            sector = rng() % m->sectors;
            count = 1;
        }
        if (sector + count > m->sectors)
            count = m->sectors - sector;
        if (count > 512)
            count = 512;
        for (uint64_t s = 0; s < count; s++) {
            fill_sector(buf + s * SECTOR, tag, sector + s);
            m->current[sector + s] = tag;
            m->ever_written[sector + s] = 1;
        }
        m->writes[m->write_count] = (struct user_write){ sector, count, false };
        m->write_count++;
        t->writes_started++;
        rc = vhdx_write(disk, sector, count, buf);
        if (rc)
            return rc;
flush:
        /* Frequent flushes: many log entries, enough to wrap the 1 MiB log. */
        if (++since_flush >= 1 + (int)(rng() % 2)) {
            rc = vhdx_flush(disk);
            if (rc)
                return rc;
            m->at_flush[m->flush_count++] = tags_copy(m, m->current);
            t->flushes_done++;
            since_flush = 0;
        }
    }
    free(buf);
    return VHDX_OK;
}

/* ---- Building and judging crash images ------------------------------------------------ */

enum mode { MODE_DROP, MODE_TEAR, MODE_REORDER, MODE_COUNT };
static const char *const mode_name[MODE_COUNT] = { "drop", "tear", "reorder" };

/* Apply op (or its first `keep` bytes, rounded to 512) to a crash image. */
static void apply_op(struct mem_file *image, const struct op *op, size_t keep)
{
    if (op->type == OP_GROW)
        crash_grow(image, op->offset);
    else if (op->type == OP_WRITE)
        mem_file_poke(image, op->offset, op->data, keep);
}

static size_t torn_length(size_t length)
{
    size_t sectors = length / SECTOR;

    return sectors > 1 ? (size_t)(rng() % sectors) * SECTOR : 0;
}

struct verdict {
    bool ok;
    char why[400];
};

static void verdict_fail(struct verdict *v, const char *fmt, ...)
{
    va_list ap;

    if (!v->ok)
        return;
    v->ok = false;
    va_start(ap, fmt);
    vsnprintf(v->why, sizeof v->why, fmt, ap);
    va_end(ap);
}

/* Where a tag stands in the order of writes: the parent's content before everything. */
static unsigned order_of(uint16_t tag)
{
    return tag == PARENT_TAG ? 0 : tag;
}

/* Is each checked sector's tag allowed at a cut with `flushes` completed vhdx_flushes
 * and `started` vhdx_writes issued? */
static void verify_disk(struct vhdx_disk *disk, const struct model *m, int flushes,
                        int started, struct verdict *v, const char *stage)
{
    enum { RUN = 64 };
    const uint16_t *durable = flushes ? m->at_flush[flushes - 1] : m->initial;
    uint8_t buf[RUN * SECTOR];

    for (uint64_t i = 0; i < m->checked_count && v->ok;) {
        /* Read a run of consecutive checked sectors at once. */
        uint64_t first = m->checked[i], n = 1;

        while (n < RUN && i + n < m->checked_count && m->checked[i + n] == first + n)
            n++;
        if (vhdx_read(disk, first, n, buf)) {
            verdict_fail(v, "%s: read of sectors %llu+%llu failed", stage,
                         (unsigned long long)first, (unsigned long long)n);
            return;
        }
        for (uint64_t k = 0; k < n && v->ok; k++) {
            const uint8_t *p = buf + k * SECTOR;
            uint64_t s = first + k;
            uint16_t tag;
            bool allowed;

            memcpy(&tag, p, 2);
            if (!sector_is(p, tag, s)) {
                verdict_fail(v, "%s: sector %llu holds bytes no write produced", stage,
                             (unsigned long long)s);
                return;
            }
            allowed = tag == durable[s];
            /*
             * Or a write issued after the last completed flush that covers s.  Writes to s
             * before that flush have tags no newer than the snapshot's, so "issued after"
             * is "newer than the snapshot's tag for s" (the parent's come before all).
             */
            if (!allowed && tag >= 1 && tag <= started) {
                const struct user_write *w = &m->writes[tag - 1];

                allowed = !w->zeros && w->sector <= s && s < w->sector + w->count &&
                          tag > order_of(durable[s]);
            }
            /* Zeros: from a zeroing or discard issued after that flush. */
            for (int z = 0; !allowed && tag == 0 && z < started; z++) {
                const struct user_write *w = &m->writes[z];

                allowed = w->zeros && w->sector <= s && s < w->sector + w->count &&
                          (unsigned)z + 1 > order_of(durable[s]);
            }
            if (!allowed)
                verdict_fail(v, "%s: sector %llu holds write %u, expected write %u or a later "
                             "one", stage, (unsigned long long)s, tag, durable[s]);
        }
        i += n;
    }
}

/* The open and close that just happened left no platform allocation behind. */
static void no_leak(const struct mem_file *image, struct verdict *v, const char *stage)
{
    if (image->alloc.live)
        verdict_fail(v, "%s: %llu platform allocations (%llu bytes) survive", stage,
                     (unsigned long long)image->alloc.live,
                     (unsigned long long)image->alloc.current);
}

static void judge(struct mem_file *image, const struct model *m, int flushes, int started,
                  struct verdict *v)
{
    struct vhdx_platform p;
    struct vhdx_disk *disk;
    struct vhdx_diag diag;
    char text[256];
    int rc;

    platform_for(&p, image);
    rc = vhdx_open(&p, VHDX_OPEN_CHECK, &disk, &diag);
    if (rc) {
        vhdx_describe(&diag, text, sizeof text);
        verdict_fail(v, "read-only check open failed: %s (%s)", text, image->last_problem);
        no_leak(image, v, "failed check open");
        return;
    }
    verify_disk(disk, m, flushes, started, v, "after in-memory replay");
    vhdx_close(disk, NULL);
    no_leak(image, v, "check open");
    if (!v->ok)
        return;
    rc = vhdx_open(&p, VHDX_OPEN_WRITABLE, &disk, &diag);
    if (!rc)
        rc = vhdx_close(disk, &diag);
    no_leak(image, v, "writable open");
    if (rc) {
        vhdx_describe(&diag, text, sizeof text);
        verdict_fail(v, "writable open (replay) failed: %s", text);
        return;
    }
    rc = vhdx_open(&p, VHDX_OPEN_CHECK, &disk, &diag);
    if (rc) {
        vhdx_describe(&diag, text, sizeof text);
        verdict_fail(v, "check after replay failed: %s (%s)", text, image->last_problem);
        return;
    }
    {
        struct vhdx_info info;

        vhdx_get_info(disk, &info);
        if (info.log_state != VHDX_LOG_WAS_CLEAN)
            verdict_fail(v, "log still dirty after an in-place replay");
    }
    verify_disk(disk, m, flushes, started, v, "after in-place replay");
    vhdx_close(disk, NULL);
    no_leak(image, v, "check after replay");
}

static void dump(const struct mem_file *image, const char *dir, size_t k, enum mode mode)
{
    char path[512];

    snprintf(path, sizeof path, "%s/cut-%05zu-%s.vhdx", dir, k, mode_name[mode]);
    if (mem_file_save(image, path))
        fprintf(stderr, "cannot write %s\n", path);
}

/*
 * The differencing variant: a 64 MiB parent whose every sector carries PARENT_TAG, and an
 * empty child of it made by vhdx_create, with the locator naming the parent.
 */
static void make_chain(struct mem_file *child)
{
    struct vhdx_create_options o;
    struct vhdx_locator_entry locator[2];
    struct vhdx_platform p;
    struct vhdx_disk *disk;
    struct vhdx_diag diag;
    struct vhdx_info info;
    char linkage[39];
    uint8_t *buf = xmalloc(2048 * SECTOR);
    uint64_t sectors = (64u << 20) / SECTOR;

    mem_file_init(&parent_file);
    memset(&o, 0, sizeof o);
    o.virtual_size = 64u << 20;
    o.block_size = 1u << 20;
    platform_for(&p, &parent_file);
    if (vhdx_create(&p, &o, &diag) || vhdx_open(&p, VHDX_OPEN_WRITABLE, &disk, &diag)) {
        printf("FAIL powerloss_setup: the parent cannot be made (%d)\n", diag.code);
        exit(1);
    }
    for (uint64_t sector = 0; sector < sectors; sector += 2048) {
        for (unsigned k = 0; k < 2048; k++)
            fill_sector(buf + k * SECTOR, PARENT_TAG, sector + k);
        vhdx_write(disk, sector, 2048, buf);
    }
    vhdx_get_info(disk, &info);
    vhdx_close(disk, NULL);
    parent_file.read_only = true;
    vhdx_guid_format(&info.data_write_guid, linkage);
    locator[0] = (struct vhdx_locator_entry){ "parent_linkage", linkage };
    locator[1] = (struct vhdx_locator_entry){ "relative_path", ".\\" PARENT_NAME };
    o.locator = locator;
    o.locator_count = 2;
    mem_file_init(child);
    platform_for(&p, child);
    if (vhdx_create(&p, &o, &diag)) {
        printf("FAIL powerloss_setup: the child cannot be made (%d)\n", diag.code);
        exit(1);
    }
    free(buf);
}

int main(int argc, char **argv)
{
    struct trace t;
    struct model m;
    struct vhdx_platform p;
    struct vhdx_disk *disk;
    struct vhdx_diag diag;
    struct vhdx_info info;
    struct mem_file live, durable;
    char text[256];
    size_t durable_upto = 0, cuts = 0, failed = 0, write_ops = 0, dump_every = 0;
    const char *dump_dir = NULL;
    int rc;

    if (argc >= 2 && !strcmp(argv[argc - 1], "--junk-grow")) {
        grow_junk = true;
        argc--;
    }
    if (argc == 2 && !strcmp(argv[1], "--differencing"))
        differencing = true;
    else if (argc != 2 && !(argc == 5 && !strcmp(argv[2], "--dump-every"))) {
        fprintf(stderr, "usage: test_powerloss IMAGE [--dump-every N DIR] [--junk-grow]\n"
                        "       test_powerloss --differencing [--junk-grow]\n");
        return 2;
    }
    if (argc == 5) {
        dump_every = (size_t)atol(argv[3]);
        dump_dir = argv[4];
    }
    printf("platform: grow() %s%s\n", grow_junk ? "leaves junk" : "zero-fills",
           differencing ? "; a differencing child of a stamped parent" : "");
    if (differencing) {
        make_chain(&live);
    } else if (mem_file_load(&live, argv[1])) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    if (grow_junk)
        mem_file_grow_fill(&live, JUNK);
    /* What the crash images start from: the file before the workload. */
    mem_file_clone(&durable, &live);

    /* Record the workload. */
    memset(&t, 0, sizeof t);
    t.size = live.image.size;
    platform_for(&p, &live);
    live.hook = trace_event;
    live.hook_context = &t;
    rc = vhdx_open(&p, VHDX_OPEN_WRITABLE, &disk, &diag);
    if (rc) {
        printf("FAIL powerloss_setup: the image does not open (%d)\n", rc);
        return 1;
    }
    vhdx_get_info(disk, &info);
    memset(&m, 0, sizeof m);
    m.sectors = info.virtual_size / SECTOR;
    m.sectors_per_block = info.block_size / SECTOR;
    m.at_flush = xmalloc((WORKLOAD_WRITES + 2) * sizeof *m.at_flush);
    m.current = calloc(m.sectors, sizeof *m.current);
    m.initial = calloc(m.sectors, sizeof *m.initial);
    for (uint64_t sector = 0; differencing && sector < m.sectors; sector++)
        m.initial[sector] = m.current[sector] = PARENT_TAG;
    m.ever_written = calloc(m.sectors, 1);
    rc = run_workload(disk, &t, &m);
    if (!rc)
        rc = vhdx_close(disk, &diag);
    if (rc) {
        vhdx_describe(&diag, text, sizeof text);
        printf("FAIL powerloss_workload: %s\n", text);
        return 1;
    }
    /* Verify every written sector, and a few others per block (they must read as zeros). */
    m.checked = xmalloc(m.sectors * sizeof *m.checked);
    for (uint64_t sector = 0; sector < m.sectors; sector++) {
        if (m.ever_written[sector] || sector % m.sectors_per_block == 0 || sector % 509 == 0)
            m.checked[m.checked_count++] = sector;
    }
    /* A clean close is a completed flush too. */
    m.at_flush[m.flush_count++] = tags_copy(&m, m.current);
    t.flushes_done++;
    trace_add(&t, OP_FLUSH);
    for (size_t i = 0; i < t.count; i++)
        write_ops += t.ops[i].type == OP_WRITE;
    printf("workload: %d user writes, %d flushes, %zu platform operations (%zu writes)\n",
           m.write_count, m.flush_count, t.count, write_ops);
    {
        /* The log must have wrapped: some log write lands below an earlier one. */
        uint64_t highest = 0;
        bool wrapped = false;

        for (size_t i = 0; i < t.count; i++) {
            const struct op *op = &t.ops[i];

            if (op->type != OP_WRITE || op->offset < info.log_offset ||
                op->offset >= info.log_offset + info.log_length)
                continue;
            wrapped |= op->offset < highest;
            if (op->offset > highest)
                highest = op->offset;
        }
        printf("%s workload_wraps_the_log_%s%s%s\n", wrapped ? "PASS" : "FAIL",
               differencing ? "differencing_" : "", grow_junk ? "junk_grow" : "zero_grow",
               wrapped ? "" : ": no log write went back to the start of the log");
    }

    /* Cut after every platform write, in every mode. */
    for (size_t k = 0; k < t.count; k++) {
        const struct op *cut = &t.ops[k];
        size_t last_flush = durable_upto;

        if (cut->type != OP_WRITE)
            continue;
        /* Everything before the last platform flush preceding op k is durable. */
        for (size_t i = durable_upto; i < k; i++) {
            if (t.ops[i].type == OP_FLUSH)
                last_flush = i + 1;
        }
        for (size_t i = durable_upto; i < last_flush; i++) {
            const struct op *op = &t.ops[i];

            apply_op(&durable, op, op->length);
        }
        durable_upto = last_flush;

        for (int mode = 0; mode < MODE_COUNT; mode++) {
            struct mem_file image;
            struct verdict v = { true, "" };
            size_t pending = k + 1 - durable_upto;

            /* Shares the durable pages: only what the cut changes is copied. */
            mem_file_clone(&image, &durable);
            if (mode == MODE_TEAR) {
                for (size_t i = durable_upto; i < k; i++)
                    apply_op(&image, &t.ops[i], t.ops[i].length);
                apply_op(&image, cut, torn_length(cut->length));
            } else if (mode == MODE_REORDER) {
                size_t *order = xmalloc(pending * sizeof *order), n = 0;

                for (size_t i = durable_upto; i <= k; i++) {
                    if (rng() % 2)
                        order[n++] = i;
                }
                for (size_t i = n; i > 1; i--) {
                    size_t j = (size_t)(rng() % i), tmp = order[i - 1];

                    order[i - 1] = order[j];
                    order[j] = tmp;
                }
                for (size_t i = 0; i < n; i++) {
                    const struct op *op = &t.ops[order[i]];

                    apply_op(&image, op, i + 1 == n ? torn_length(op->length) : op->length);
                }
                free(order);
            }
            judge(&image, &m, cut->flushes_done, cut->writes_started, &v);
            cuts++;
            (void)pending;
            if (!v.ok) {
                failed++;
                printf("FAIL cut_%zu_%s: %s\n", k, mode_name[mode], v.why);
            }
            if (dump_dir && mode == MODE_REORDER && (cuts / MODE_COUNT) % dump_every == 0) {
                /* Let the suite hand a replayed copy to qemu-img check. */
                struct vhdx_platform cp;
                struct vhdx_disk *d2;

                platform_for(&cp, &image);
                if (!vhdx_open(&cp, VHDX_OPEN_WRITABLE, &d2, NULL))
                    vhdx_close(d2, NULL);
                dump(&image, dump_dir, k, (enum mode)mode);
            }
            mem_file_free(&image);
        }
    }
    printf("tried %zu cut points (%zu writes x %d modes), %zu failed\n", cuts, write_ops,
           MODE_COUNT, failed);
    printf("%s powerloss_every_cut_point_%s%s%s\n", failed ? "FAIL" : "PASS",
           differencing ? "differencing_" : "", grow_junk ? "junk_grow" : "zero_grow",
           failed ? ": see the cuts above" : "");
    for (size_t i = 0; i < t.count; i++)
        free(t.ops[i].data);
    free(t.ops);
    mem_file_free(&live);
    mem_file_free(&durable);
    for (int i = 0; i < m.flush_count; i++)
        free(m.at_flush[i]);
    free(m.at_flush);
    free(m.current);
    free(m.initial);
    free(m.ever_written);
    if (differencing)
        mem_file_free(&parent_file);
    free(m.checked);
    return failed ? 1 : 0;
}

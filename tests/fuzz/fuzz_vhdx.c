/*
 * fuzz_vhdx.c - the fuzz target: one input is a small, sparse VHDX file plus a plan
 * (a write workload and a fault); the core opens it every way it can and the target
 * checks invariants and cost bounds, not only crashes.
 *
 * Built two ways from this one file: with libFuzzer (`make fuzz`, clang
 * -fsanitize=fuzzer,address,undefined), and without it for the regression pass of
 * `make check` (tests/fuzz/corpus_main.c runs each corpus file through it, gcc or clang
 * with ASan and UBSan).
 *
 * Input format (all integers little-endian; tests/fuzz/seeds.py writes it):
 *   0   u8   reseal: checksums recomputed after decoding, so mutations get past them:
 *            bit 0 header 1, bit 1 header 2, bit 2 region table 1, bit 3 region table 2,
 *            bit 4 every entry of the current header's log (logs up to 8 MiB)
 *   1   u8   plan: bits 0-2 the fault (enum fault_kind), bit 3 a power cut also loses
 *            what was not flushed, bits 4-7 the workload's writes minus one
 *   2   u16  the fault's N (the Nth call of its kind, counted from the writable open)
 *   4   u32  file size in 4 KiB units (up to 16 TiB; the file is sparse)
 *   8   u32  seed of the workload and of the ranges read
 *   12  ...  chunks: u48 file offset, u16 length, then the bytes (the last one may be
 *            cut short); later chunks win; bytes past the file size are dropped
 * Why this format: a VHDX file is megabytes of mostly zeros (a 1 MiB header section, a
 * log, 64 KiB tables), too big for byte-level mutation; its meaning lives in a few
 * hundred non-zero bytes.  Encoding only those keeps an input around 1-4 KiB, so nearly
 * every mutation lands on a field; any image (qemu-img, the fixture writer, the samples,
 * the hostile generators) converts to it; and resealing lets mutated structures reach
 * the checks behind their checksums.  (An edit list over one fixed base image, the
 * previous design, could not move or resize structures or start from other images.)
 *
 * Invariants (enum invariant; FUZZ_KNOWN=name,name counts them instead of aborting, to
 * fuzz past a known bug) and bounds (the table `bounds`) are listed where defined.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "vhdx.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)

/* ---- Bounds: what one input may cost the core.  Tighten them here. ------------------- */

enum bound_id {
    B_ALLOC_PEAK,               /* bytes held at once (a refused request counts) */
    B_READ_BASE,                /* bytes read per open: base + factor x file size */
    B_READ_PER_FILE_BYTE,
    B_CRC_BASE,                 /* bytes checksummed per open: base + factor x log length */
    B_CRC_PER_LOG_BYTE,
    B_COMPARE_BASE,             /* bytes compared (lengths asked of mem_equal, an upper
                                   bound) per open: base + factor x bytes read */
    B_COMPARE_PER_READ_BYTE,
    B_PROBLEMS,                 /* problem messages of one check-mode open */
    B_OPEN_WRITE_BASE,          /* bytes a writable open writes: base + log length + file */
    B_WORKLOAD_WRITE_PER_FLUSH, /* bytes a workload writes besides its data and new blocks */
    B_COUNT
};

static const struct {
    const char *name;
    uint64_t value;
} bounds[B_COUNT] = {
    [B_ALLOC_PEAK] = { "alloc_peak", 32 * MiB },
    [B_READ_BASE] = { "read_base", 4 * MiB },
    [B_READ_PER_FILE_BYTE] = { "read_per_file_byte", 2 },
    [B_CRC_BASE] = { "crc_base", 1 * MiB },
    [B_CRC_PER_LOG_BYTE] = { "crc_per_log_byte", 4 },
    [B_COMPARE_BASE] = { "compare_base", 4 * MiB },
    [B_COMPARE_PER_READ_BYTE] = { "compare_per_read_byte", 16 },
    [B_PROBLEMS] = { "problems", 256 },
    [B_OPEN_WRITE_BASE] = { "open_write_base", 1 * MiB },
    [B_WORKLOAD_WRITE_PER_FLUSH] = { "workload_write_per_flush", 64 * KiB },
};

#define BOUND(id) (bounds[id].value)

/* ---- Invariants ---------------------------------------------------------------------- */

enum invariant {
    I_READ_ONLY_WRITES,         /* a read-only or check open wrote, flushed or grew */
    I_READ_ONLY_CHANGED,        /* ... or the file is not byte-identical afterwards */
    I_CHECK_BUT_NO_OPEN,        /* check passes but a normal open fails */
    I_CHECK_READS_DIFFER,       /* check-mode reads differ from a normal open's */
    I_OPEN_MODES_DISAGREE,      /* read-only and writable opens disagree (no fault) */
    I_REPLAY_DIFFERS,           /* in-place replay reads differently from in-memory */
    I_FAILED_OPEN_WROTE,        /* a writable open failed (no fault) and changed the file */
    I_LEAK,                     /* a platform allocation survived a close or failed open */
    I_HEADER_SECTION_WRITE,     /* a write in the first 1 MiB other than a whole header */
    I_LOG_WRITE_IN_REPLAY,      /* a write into the log during the writable open */
    I_WRITE_LOST,               /* an acknowledged write does not read back */
    I_FLUSHED_LOST,             /* after a fault, flushed data is not intact */
    I_FAULT_UNOPENABLE,         /* after a fault, the file does not open any more */
    I_CLEAN_NOT_CLEAN,          /* a check-clean image is not check-clean after writes */
    I_CALL_FAILED,              /* a call failed with no fault and no reason */
    I_BOUND,                    /* a cost bound was exceeded */
    I_COUNT
};

static const char *const invariant_name[I_COUNT] = {
    [I_READ_ONLY_WRITES] = "read_only_writes",
    [I_READ_ONLY_CHANGED] = "read_only_changed",
    [I_CHECK_BUT_NO_OPEN] = "check_but_no_open",
    [I_CHECK_READS_DIFFER] = "check_reads_differ",
    [I_OPEN_MODES_DISAGREE] = "open_modes_disagree",
    [I_REPLAY_DIFFERS] = "replay_differs",
    [I_FAILED_OPEN_WROTE] = "failed_open_wrote",
    [I_LEAK] = "leak",
    [I_HEADER_SECTION_WRITE] = "header_section_write",
    [I_LOG_WRITE_IN_REPLAY] = "log_write_in_replay",
    [I_WRITE_LOST] = "write_lost",
    [I_FLUSHED_LOST] = "flushed_lost",
    [I_FAULT_UNOPENABLE] = "fault_unopenable",
    [I_CLEAN_NOT_CLEAN] = "clean_not_clean",
    [I_CALL_FAILED] = "call_failed",
    [I_BOUND] = "bound",
};

static bool known[I_COUNT];             /* FUZZ_KNOWN: count, do not abort */
static unsigned long long counted[I_COUNT];
static char bound_known[512];           /* FUZZ_KNOWN entries naming bounds */

static bool bound_is_known(const char *name)
{
    size_t n = strlen(name);

    for (const char *p = bound_known; (p = strstr(p, name)); p += n) {
        if ((p == bound_known || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return true;
    }
    return false;
}

static void violation(enum invariant which, const char *bound_name, const char *fmt, ...)
{
    va_list ap;

    counted[which]++;
    if (known[which] || (bound_name && bound_is_known(bound_name)))
        return;
    fprintf(stderr, "INVARIANT %s%s%s: ", invariant_name[which], bound_name ? " " : "",
            bound_name ? bound_name : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

static void report_counts(void)
{
    for (int i = 0; i < I_COUNT; i++) {
        if (counted[i])
            fprintf(stderr, "fuzz: %s counted %llu times\n", invariant_name[i], counted[i]);
    }
}

static void read_known(void)
{
    const char *env = getenv("FUZZ_KNOWN");

    if (!env)
        return;
    snprintf(bound_known, sizeof bound_known, "%s", env);
    for (int i = 0; i < I_COUNT; i++) {
        const char *p = strstr(env, invariant_name[i]);
        size_t n = strlen(invariant_name[i]);

        known[i] = p && (p == env || p[-1] == ',') && (p[n] == ',' || p[n] == '\0');
    }
    atexit(report_counts);
}

/* ---- Work counters: the core's CRC and compare calls (linked with --wrap) ------------- */

static uint64_t crc_bytes, compare_bytes;

uint32_t __real_vhdx_crc32c(uint32_t crc, const void *data, size_t length) __attribute__((weak));
uint32_t __wrap_vhdx_crc32c(uint32_t crc, const void *data, size_t length);
uint32_t __real_crc_with_zero_field(const uint8_t *p, size_t length) __attribute__((weak));
uint32_t __wrap_crc_with_zero_field(const uint8_t *p, size_t length);
bool __real_mem_equal(const void *a, const void *b, size_t n) __attribute__((weak));
bool __wrap_mem_equal(const void *a, const void *b, size_t n);

uint32_t __wrap_vhdx_crc32c(uint32_t crc, const void *data, size_t length)
{
    crc_bytes += length;
    return __real_vhdx_crc32c(crc, data, length);
}

uint32_t __wrap_crc_with_zero_field(const uint8_t *p, size_t length)
{
    crc_bytes += length;
    return __real_crc_with_zero_field(p, length);
}

bool __wrap_mem_equal(const void *a, const void *b, size_t n)
{
    compare_bytes += n;
    return __real_mem_equal(a, b, n);
}

/* ---- Little helpers ------------------------------------------------------------------ */

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;

    while (n--)
        v = v << 8 | p[n];
    return v;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t rng_state;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A hash of a buffer read, 8 bytes a step (sample reads are up to 256 KiB). */
static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull, word;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        memcpy(&word, p + i, 8);
        h = (h ^ word) * 0x100000001b3ull;
    }
    for (; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static char diag_text[320];

static const char *describe(const struct vhdx_diag *d)
{
    vhdx_describe(d, diag_text, sizeof diag_text);
    return diag_text;
}

/* ---- Decoding an input ---------------------------------------------------------------- */

enum fault_kind {
    FAULT_NONE,
    FAULT_WRITE,                /* the Nth write fails */
    FAULT_TORN_WRITE,           /* the Nth write is torn and the power is cut */
    FAULT_FLUSH,                /* the Nth flush fails and the power is cut */
    FAULT_GROW_LIMIT,           /* the file may grow by at most N MiB */
    FAULT_READ,                 /* the Nth read fails */
    FAULT_ALLOCATE,             /* the Nth allocation fails */
    FAULT_POWER_CUT             /* every call from the Nth write on fails */
};

struct plan {
    unsigned reseal;
    enum fault_kind fault;
    bool lose_unflushed;
    unsigned writes;
    unsigned fault_n;
    uint64_t file_size;
    uint32_t seed;
};

#define HEADER_1 (64 * KiB)
#define HEADER_2 (128 * KiB)
#define REGION_1 (192 * KiB)
#define REGION_2 (256 * KiB)
#define MAX_RESEAL_LOG (8 * MiB)

static void reseal_at(struct mem_file *f, uint64_t offset, size_t length)
{
    static uint8_t buf[64 * KiB];

    if (!mem_file_peek(f, offset, buf, length))
        return;
    memset(buf + 4, 0, 4);
    put_le32(buf + 4, vhdx_crc32c(0, buf, length));
    mem_file_poke(f, offset + 4, buf + 4, 4);
}

/* The current header (spec 2.2.2) as a reader picks it: valid = signature and CRC. */
static bool current_header(const struct mem_file *f, uint8_t out[4096])
{
    static uint8_t h[2][4096];
    bool valid[2];

    for (int i = 0; i < 2; i++) {
        uint32_t stored;

        valid[i] = mem_file_peek(f, i ? HEADER_2 : HEADER_1, h[i], 4096) &&
                   !memcmp(h[i], "head", 4);
        if (valid[i]) {
            stored = (uint32_t)get_le(h[i] + 4, 4);
            memset(h[i] + 4, 0, 4);
            valid[i] = stored == vhdx_crc32c(0, h[i], 4096);
            put_le32(h[i] + 4, stored);
        }
    }
    if (!valid[0] && !valid[1])
        return false;
    memcpy(out, h[valid[1] && (!valid[0] || get_le(h[1] + 8, 8) > get_le(h[0] + 8, 8))],
           4096);
    return true;
}

static void reseal_log(struct mem_file *f)
{
    uint8_t h[4096];
    uint64_t offset, length;
    uint8_t *log;

    if (!current_header(f, h))
        return;
    offset = get_le(h + 72, 8);
    length = get_le(h + 68, 4);
    if (!length || length > MAX_RESEAL_LOG || length % 4096 || !(log = malloc(length)))
        return;
    if (mem_file_peek(f, offset, log, length)) {
        for (uint64_t pos = 0; pos < length; pos += 4096) {
            uint64_t entry = get_le(log + pos + 8, 4), crc;

            if (memcmp(log + pos, "loge", 4) || !entry || entry % 4096 || entry > length)
                continue;
            /* CRC over the entry, wrapping around the end of the log. */
            memset(log + pos + 4, 0, 4);
            crc = vhdx_crc32c(0, log + pos, (size_t)(entry < length - pos ? entry : length - pos));
            if (entry > length - pos)
                crc = vhdx_crc32c((uint32_t)crc, log, (size_t)(entry - (length - pos)));
            put_le32(log + pos + 4, (uint32_t)crc);
        }
        mem_file_poke(f, offset, log, length);
    }
    free(log);
}

static void decode(const uint8_t *data, size_t size, struct plan *plan, struct mem_file *f)
{
    uint8_t head[12] = { 0 };

    memcpy(head, data, size < sizeof head ? size : sizeof head);
    plan->reseal = head[0];
    plan->fault = (enum fault_kind)(head[1] & 7);
    plan->lose_unflushed = head[1] & 8;
    plan->writes = 1u + (head[1] >> 4);
    plan->fault_n = (unsigned)get_le(head + 2, 2);
    plan->file_size = get_le(head + 4, 4) * 4096;
    plan->seed = (uint32_t)get_le(head + 8, 4);
    mem_file_init(f);
    f->quiet = true;
    mem_file_resize(f, plan->file_size);
    for (size_t pos = sizeof head; pos + 8 <= size;) {
        uint64_t offset = get_le(data + pos, 6);
        size_t length = (size_t)get_le(data + pos + 6, 2);

        pos += 8;
        if (length > size - pos)
            length = size - pos;
        if (offset < plan->file_size) {
            size_t fit = plan->file_size - offset < length ? (size_t)(plan->file_size - offset)
                                                           : length;

            mem_file_poke(f, offset, data + pos, fit);
        }
        pos += length;
    }
    if (plan->reseal & 16)
        reseal_log(f);
    if (plan->reseal & 1)
        reseal_at(f, HEADER_1, 4096);
    if (plan->reseal & 2)
        reseal_at(f, HEADER_2, 4096);
    if (plan->reseal & 4)
        reseal_at(f, REGION_1, 64 * KiB);
    if (plan->reseal & 8)
        reseal_at(f, REGION_2, 64 * KiB);
}

/* ---- Cost accounting around one open ------------------------------------------------- */

struct cost {
    uint64_t crc, compare;
};

static void cost_start(struct mem_file *f, struct cost *c)
{
    mem_file_reset_counters(f);
    c->crc = crc_bytes;
    c->compare = compare_bytes;
}

/* After an open (and whatever was done with it) and its close. */
static void cost_check(struct mem_file *f, const struct cost *c, uint64_t file_size,
                       uint64_t log_length, const char *what)
{
    uint64_t crc = crc_bytes - c->crc, compare = compare_bytes - c->compare;
    uint64_t read_bound = BOUND(B_READ_BASE) + BOUND(B_READ_PER_FILE_BYTE) * file_size;

    if (f->alloc.live)
        violation(I_LEAK, NULL, "%s: %llu allocations (%llu bytes) survive", what,
                  (unsigned long long)f->alloc.live, (unsigned long long)f->alloc.current);
    if (f->alloc.peak_requested > BOUND(B_ALLOC_PEAK))
        violation(I_BOUND, "alloc_peak", "%s: the core asked to hold %llu bytes at once "
                  "(largest request %llu)", what, (unsigned long long)f->alloc.peak_requested,
                  (unsigned long long)f->alloc.largest_request);
    if (f->count.bytes_read > read_bound)
        violation(I_BOUND, "read", "%s: read %llu bytes of a %llu-byte file", what,
                  (unsigned long long)f->count.bytes_read, (unsigned long long)file_size);
    if (crc > BOUND(B_CRC_BASE) + BOUND(B_CRC_PER_LOG_BYTE) * log_length)
        violation(I_BOUND, "crc", "%s: checksummed %llu bytes with a %llu-byte log", what,
                  (unsigned long long)crc, (unsigned long long)log_length);
    if (compare > BOUND(B_COMPARE_BASE) + BOUND(B_COMPARE_PER_READ_BYTE) * f->count.bytes_read)
        violation(I_BOUND, "compare", "%s: compared %llu bytes after reading %llu", what,
                  (unsigned long long)compare, (unsigned long long)f->count.bytes_read);
}

/* ---- Reading samples of a disk ------------------------------------------------------- */

#define SAMPLES 6
#define SAMPLE_MAX (256 * KiB)

struct samples {
    uint64_t sector[SAMPLES], count[SAMPLES];
    uint64_t hash[SAMPLES];
    bool ok[SAMPLES];
};

static uint8_t sample_buffer[SAMPLE_MAX];

static void samples_plan(struct samples *s, const struct vhdx_info *info, uint32_t seed)
{
    uint64_t lss = info->logical_sector_size, total = info->virtual_size / lss;
    uint64_t max = SAMPLE_MAX / lss;

    rng_state = 0x9E3779B97F4A7C15ull ^ seed;
    for (int i = 0; i < SAMPLES; i++) {
        uint64_t start = i == 0 ? 0 : i == 1 ? total - 1 : rng() % total;
        uint64_t count = i == 0 ? 64 * KiB / lss : 1 + rng() % max;

        if (i == 2 && info->block_size)     /* across the first block boundary */
            start = info->block_size / lss > 3 && total > info->block_size / lss
                        ? info->block_size / lss - 3 : 0;
        if (count > total - start)
            count = total - start;
        s->sector[i] = start;
        s->count[i] = count;
    }
}

static void samples_read(struct samples *s, struct vhdx_disk *disk, unsigned lss)
{
    for (int i = 0; i < SAMPLES; i++) {
        s->ok[i] = vhdx_read(disk, s->sector[i], s->count[i], sample_buffer) == VHDX_OK;
        s->hash[i] = s->ok[i] ? fnv(sample_buffer, s->count[i] * lss) : 0;
    }
}

/* Index of the first sample that differs, or -1. */
static int samples_differ(const struct samples *a, const struct samples *b)
{
    for (int i = 0; i < SAMPLES; i++) {
        if (a->ok[i] != b->ok[i] || a->hash[i] != b->hash[i])
            return i;
    }
    return -1;
}

/* ---- Read-only opens ------------------------------------------------------------------ */

struct reading {
    int rc;
    struct vhdx_diag diag;
    struct vhdx_info info;
    struct samples samples;
    uint64_t problems;
};

/*
 * A check-mode open that reports problems past the bound may go on for millions of them
 * (quadratic tables): once the bound is exceeded and known (FUZZ_KNOWN), the open is
 * abandoned from the log callback, so the campaign does not spend its time there.
 */
static jmp_buf abandon;
static void (*real_log)(void *context, enum vhdx_log_level level, const char *message);

static void bounded_log(void *context, enum vhdx_log_level level, const char *message)
{
    struct mem_file *f = context;

    real_log(context, level, message);
    if (level == VHDX_LOG_PROBLEM && f->problems == BOUND(B_PROBLEMS) + 1) {
        violation(I_BOUND, "problems", "more than %llu problems reported",
                  (unsigned long long)BOUND(B_PROBLEMS));
        longjmp(abandon, 1);
    }
}

/* Open a clone of `file` read-only (flags 0 or VHDX_OPEN_CHECK), read samples, close;
 * check it wrote nothing, changed nothing and kept within the bounds. */
static void read_only_open(const struct mem_file *file, unsigned flags, uint32_t seed,
                           const struct samples *plan_from, struct reading *r,
                           uint64_t log_length, const char *what)
{
    struct mem_file f;
    struct vhdx_platform p;
    struct vhdx_disk *disk;
    struct cost cost;

    mem_file_clone(&f, file);
    f.alloc.limit = BOUND(B_ALLOC_PEAK);
    mem_file_platform(&f, &p);
    real_log = p.log;
    p.log = bounded_log;
    cost_start(&f, &cost);
    if (setjmp(abandon)) {
        mem_file_release_all(&f);
        r->rc = VHDX_E_CHECK_FAILED;
        memset(&r->diag, 0, sizeof r->diag);
        r->diag.code = VHDX_E_CHECK_FAILED;
        mem_file_free(&f);
        return;
    }
    r->rc = vhdx_open(&p, flags, &disk, &r->diag);
    describe(&r->diag);             /* every message renders (what the tool prints) */
    if (r->rc == VHDX_OK) {
        vhdx_get_info(disk, &r->info);
        for (uint32_t i = 0; i < r->info.parent_locator_entries; i++) {
            const char *key, *value;

            if (vhdx_parent_locator_entry(disk, i, &key, &value) != VHDX_OK)
                violation(I_CALL_FAILED, NULL, "%s: parent locator entry %u of %u", what, i,
                          r->info.parent_locator_entries);
        }
        if (plan_from)
            r->samples = *plan_from;
        else
            samples_plan(&r->samples, &r->info, seed);
        samples_read(&r->samples, disk, r->info.logical_sector_size);
        vhdx_close(disk, NULL);
    }
    r->problems = f.problems;
    if (f.count.writes || f.count.flushes || f.count.grows)
        violation(I_READ_ONLY_WRITES, NULL, "%s: %llu writes, %llu flushes, %llu grows", what,
                  (unsigned long long)f.count.writes, (unsigned long long)f.count.flushes,
                  (unsigned long long)f.count.grows);
    if (!mem_image_same(&f.image, &file->image, NULL))
        violation(I_READ_ONLY_CHANGED, NULL, "%s: the file changed", what);
    cost_check(&f, &cost, file->image.size, log_length, what);
    mem_file_free(&f);
}

/* ---- The writable open, the workload and its model ----------------------------------- */

#define MAX_WRITES 16
#define WRITE_MAX (64 * KiB)

struct user_write {
    uint64_t sector, count;
    bool acknowledged;          /* vhdx_write returned OK */
};

struct workload {
    unsigned lss;
    struct user_write w[MAX_WRITES];
    unsigned issued;            /* writes started */
    unsigned acknowledged;      /* the first ones, that returned VHDX_OK */
    unsigned flushed;           /* writes made durable by the last successful flush */
    int failure;                /* the failed write or flush: its code and diagnosis */
    struct vhdx_diag failure_diag;
    uint8_t *original[MAX_WRITES];   /* each range's content before the workload */
    uint64_t user_bytes, blocks_touched, flush_calls;
};

/* A logical sector's content names its write (tag) and its number. */
static void fill_sector(uint8_t *p, unsigned lss, unsigned tag, uint64_t sector)
{
    uint64_t x = (uint64_t)tag * 0x100000001B3ull ^ (sector + 1) * 0x9E3779B97F4A7C15ull;

    for (unsigned i = 0; i < lss; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
}

/* What sector `s` held before the workload (the write that covers it recorded it). */
static const uint8_t *original_of(const struct workload *wl, uint64_t s)
{
    for (unsigned i = 0; i < wl->issued; i++) {
        const struct user_write *w = &wl->w[i];

        if (w->sector <= s && s < w->sector + w->count)
            return wl->original[i] + (s - w->sector) * wl->lss;
    }
    return NULL;
}

/* Latest write (tag, 1-based) among the first `upto` covering `s`; 0: none. */
static unsigned latest_tag(const struct workload *wl, unsigned upto, uint64_t s)
{
    unsigned tag = 0;

    for (unsigned i = 0; i < upto; i++) {
        if (wl->w[i].sector <= s && s < wl->w[i].sector + wl->w[i].count)
            tag = i + 1;
    }
    return tag;
}

static bool sector_is(const struct workload *wl, const uint8_t *p, unsigned tag, uint64_t s)
{
    static uint8_t want[4096];

    if (tag == 0)
        return !memcmp(p, original_of(wl, s), wl->lss);
    fill_sector(want, wl->lss, tag, s);
    return !memcmp(p, want, wl->lss);
}

/*
 * Every sector the workload wrote must hold what it held at the last successful flush, or
 * what a write issued after that flush put there; with `exact`, the latest write.
 */
static void verify_workload(struct vhdx_disk *disk, const struct workload *wl, bool exact,
                            enum invariant which, const char *what)
{
    static uint8_t buf[WRITE_MAX];

    for (unsigned i = 0; i < wl->issued; i++) {
        const struct user_write *w = &wl->w[i];

        if (vhdx_read(disk, w->sector, w->count, buf) != VHDX_OK)
            violation(which, NULL, "%s: reading write %u (sectors %llu+%llu) failed: %s", what,
                      i + 1, (unsigned long long)w->sector, (unsigned long long)w->count,
                      describe(vhdx_last_diag(disk)));
        for (uint64_t k = 0; k < w->count; k++) {
            uint64_t s = w->sector + k;
            const uint8_t *p = buf + k * wl->lss;
            unsigned durable = latest_tag(wl, exact ? wl->issued : wl->flushed, s);
            bool allowed = sector_is(wl, p, durable, s);

            for (unsigned t = wl->flushed; !exact && !allowed && t < wl->issued; t++) {
                allowed = wl->w[t].sector <= s && s < wl->w[t].sector + wl->w[t].count &&
                          sector_is(wl, p, t + 1, s);
            }
            if (!allowed)
                violation(which, NULL, "%s: sector %llu holds neither write %u's data nor a "
                          "later write's", what, (unsigned long long)s, durable);
        }
    }
}

static void workload_plan(struct workload *wl, const struct vhdx_info *info, unsigned writes,
                          uint32_t seed)
{
    uint64_t total = info->virtual_size / info->logical_sector_size;
    uint64_t max = WRITE_MAX / info->logical_sector_size;

    memset(wl, 0, sizeof *wl);
    wl->lss = info->logical_sector_size;
    rng_state = 0xD1B54A32D192ED03ull ^ ((uint64_t)seed << 17);
    for (unsigned i = 0; i < writes && i < MAX_WRITES; i++) {
        struct user_write *w = &wl->w[i];
        unsigned kind = (unsigned)(rng() % 4);

        if (kind == 0 && i > 0) {   /* overlap an earlier write */
            w->sector = wl->w[rng() % i].sector;
        } else if (kind == 1 && info->block_size) {     /* across a block boundary */
            uint64_t per_block = info->block_size / wl->lss, blocks = total / per_block;

            w->sector = blocks > 1 ? (1 + rng() % (blocks - 1)) * per_block - 1 : 0;
        } else {
            w->sector = rng() % total;
        }
        w->count = 1 + rng() % max;
        if (w->sector >= total)
            w->sector = total - 1;
        if (w->count > total - w->sector)
            w->count = total - w->sector;
    }
}

struct hook_state {
    bool in_open;               /* the writable open (replay) is running */
    uint64_t log_offset, log_length;
};

static bool trace;                      /* FUZZ_TRACE: print the writable file's calls */

static void check_write(void *context, const struct mem_event *e)
{
    const struct hook_state *h = context;

    if (trace)
        fprintf(stderr, "trace: %s #%llu offset %llu length %zu done %zu -> %d%s\n",
                e->op == MEM_OP_READ ? "read" : e->op == MEM_OP_WRITE ? "write"
                : e->op == MEM_OP_FLUSH ? "flush" : "grow", (unsigned long long)e->call,
                (unsigned long long)e->offset, e->length, e->done, e->result,
                e->injected ? " (injected)" : "");

    if (e->op != MEM_OP_WRITE || e->result == VHDX_E_READ_ONLY)
        return;
    if (e->offset < MiB && !((e->offset == HEADER_1 || e->offset == HEADER_2) &&
                             e->length == 4096))
        violation(I_HEADER_SECTION_WRITE, NULL, "write of %zu bytes at %llu", e->length,
                  (unsigned long long)e->offset);
    if (h->in_open && h->log_length && e->offset < h->log_offset + h->log_length &&
        h->log_offset < e->offset + e->length)
        violation(I_LOG_WRITE_IN_REPLAY, NULL, "write of %zu bytes at %llu, inside the log "
                  "at %llu+%llu", e->length, (unsigned long long)e->offset,
                  (unsigned long long)h->log_offset, (unsigned long long)h->log_length);
}

static void arm_fault(struct mem_file *f, const struct plan *plan)
{
    unsigned n = plan->fault_n % 64 + 1;

    switch (plan->fault) {
    case FAULT_NONE:
        break;
    case FAULT_WRITE:
        f->fault.write.nth = n;
        break;
    case FAULT_TORN_WRITE:
        f->fault.write.nth = n;
        f->fault.torn_keep = (plan->fault_n >> 6) * 512u;
        f->fault.stop_after_fault = true;
        break;
    case FAULT_FLUSH:
        f->fault.flush.nth = n % 16 + 1;
        f->fault.stop_after_fault = true;
        break;
    case FAULT_GROW_LIMIT:
        f->fault.grow_limit = f->image.size + (uint64_t)(plan->fault_n % 256) * MiB;
        break;
    case FAULT_READ:
        f->fault.read.nth = n;
        break;
    case FAULT_ALLOCATE:
        f->fault.allocate.nth = n;
        break;
    case FAULT_POWER_CUT:
        f->fault.write.nth = n;
        f->fault.write.persist = true;
        f->fault.stop_after_fault = true;
        break;
    }
}

/* The largest file a correct core could need for this geometry (no data beyond it). */
static uint64_t geometry_max(const struct vhdx_info *info, uint64_t file_size)
{
    uint64_t end = file_size, blocks = info->blocks_total;
    uint64_t chunks = info->chunk_ratio ? (blocks + info->chunk_ratio - 1) / info->chunk_ratio : 0;

    if (end < info->log_offset + info->log_length)
        end = info->log_offset + info->log_length;
    if (end < info->bat_offset + info->bat_length)
        end = info->bat_offset + info->bat_length;
    if (end < info->metadata_offset + info->metadata_length)
        end = info->metadata_offset + info->metadata_length;
    return (end + MiB - 1) / MiB * MiB + blocks * info->block_size + chunks * MiB;
}

/* ---- One input ------------------------------------------------------------------------ */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    read_known();
    return 0;
}

static void run_workload(struct vhdx_disk *disk, struct workload *wl, const struct vhdx_info *info)
{
    static uint8_t buf[WRITE_MAX];
    unsigned planned = 0;

    while (planned < MAX_WRITES && wl->w[planned].count)
        planned++;
    /* What each range held before: the model's "tag 0". */
    for (unsigned i = 0; i < planned; i++) {
        wl->original[i] = malloc(wl->w[i].count * wl->lss);
        if (vhdx_read(disk, wl->w[i].sector, wl->w[i].count, wl->original[i]) != VHDX_OK) {
            free(wl->original[i]);
            wl->original[i] = NULL;
            planned = i;        /* a read fault: write only what we could read */
            break;
        }
    }
    for (unsigned i = 0; i < planned; i++) {
        struct user_write *w = &wl->w[i];

        for (uint64_t k = 0; k < w->count; k++)
            fill_sector(buf + k * wl->lss, wl->lss, i + 1, w->sector + k);
        wl->issued = i + 1;
        if (trace)
            fprintf(stderr, "trace: vhdx_write %u: sectors %llu+%llu\n", i + 1,
                    (unsigned long long)w->sector, (unsigned long long)w->count);
        wl->user_bytes += w->count * wl->lss;
        wl->blocks_touched += (w->count * wl->lss + info->block_size - 1) / info->block_size + 1;
        wl->failure = vhdx_write(disk, w->sector, w->count, buf);
        if (wl->failure) {
            wl->failure_diag = *vhdx_last_diag(disk);
            return;
        }
        w->acknowledged = true;
        wl->acknowledged = wl->issued;
        /* Flush now and then, and like the firmware whenever blocks were allocated. */
        if (rng() % 3 == 0 || (vhdx_allocation_pending(disk) && rng() % 2)) {
            if (trace)
                fprintf(stderr, "trace: vhdx_flush\n");
            wl->flush_calls++;
            wl->failure = vhdx_flush(disk);
            if (wl->failure) {
                wl->failure_diag = *vhdx_last_diag(disk);
                return;
            }
            wl->flushed = wl->issued;
        }
    }
}

/* Failures a correct core may return to a write, flush or close with no fault injected
 * (no room in the log, a bounded allocation, a disk it cannot write) are fine; these
 * mean the core issued I/O outside the file or tripped over its own arguments. */
static bool unexpected_failure(int rc)
{
    return rc == VHDX_E_IO || rc == VHDX_E_RANGE || rc == VHDX_E_ARGUMENT ||
           rc == VHDX_E_TRUNCATED;
}

static void free_workload(struct workload *wl)
{
    for (unsigned i = 0; i < MAX_WRITES; i++)
        free(wl->original[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool initialized;
    struct plan plan;
    struct mem_file base, w;
    struct reading ro, check, after;
    struct hook_state hook = { false, 0, 0 };
    struct vhdx_platform p;
    struct vhdx_disk *disk;
    struct vhdx_diag diag;
    struct vhdx_info info;
    struct samples in_place;
    struct workload wl;
    struct cost cost;
    uint8_t header[4096];
    uint64_t open_written, open_injected, size_after_open, log_length = 0;
    int rc;
    bool faulted;

    if (!initialized) {
        trace = getenv("FUZZ_TRACE") != NULL;
        read_known();
        initialized = true;
    }
    if (size > 1 << 20)
        return 0;
    decode(data, size, &plan, &base);
    if (current_header(&base, header)) {
        hook.log_offset = get_le(header + 72, 8);
        hook.log_length = log_length = get_le(header + 68, 4);
    }

    /* A read-only open and a check-mode open: no write, the same reads. */
    read_only_open(&base, 0, plan.seed, NULL, &ro, log_length, "read-only open");
    read_only_open(&base, VHDX_OPEN_CHECK, plan.seed, ro.rc ? NULL : &ro.samples, &check,
                   log_length, "check open");
    if (check.rc == VHDX_OK && ro.rc != VHDX_OK)
        violation(I_CHECK_BUT_NO_OPEN, NULL, "check passes, open fails: %s", describe(&ro.diag));
    if (check.rc == VHDX_OK && ro.rc == VHDX_OK && samples_differ(&ro.samples, &check.samples) >= 0)
        violation(I_CHECK_READS_DIFFER, NULL, "sample %d reads differently in check mode",
                  samples_differ(&ro.samples, &check.samples));

    /* The writable open (replay in place), with the fault armed. */
    mem_file_clone(&w, &base);
    w.alloc.limit = BOUND(B_ALLOC_PEAK);
    w.hook = check_write;
    w.hook_context = &hook;
    mem_file_keep_durable(&w);
    arm_fault(&w, &plan);
    mem_file_platform(&w, &p);
    cost_start(&w, &cost);
    hook.in_open = true;
    rc = vhdx_open(&p, VHDX_OPEN_WRITABLE, &disk, &diag);
    hook.in_open = false;
    describe(&diag);
    open_injected = w.count.injected;
    faulted = open_injected > 0;
    open_written = w.count.bytes_written;
    memset(&wl, 0, sizeof wl);
    if (rc != VHDX_OK) {
        if (!w.count.injected && !mem_image_same(&w.image, &base.image, NULL))
            violation(I_FAILED_OPEN_WROTE, NULL, "the open failed (%s) after writing %llu "
                      "bytes", describe(&diag), (unsigned long long)open_written);
        if (!w.count.injected && ro.rc == VHDX_OK && rc != VHDX_E_SEQUENCE_EXHAUSTED &&
            rc != VHDX_E_NOMEM && rc != VHDX_E_NO_SPACE)
            violation(I_OPEN_MODES_DISAGREE, NULL, "read-only open works, writable fails: %s",
                      describe(&diag));
        cost_check(&w, &cost, base.image.size, log_length, "failed writable open");
    } else {
        vhdx_get_info(disk, &info);
        size_after_open = w.image.size;
        if (ro.rc != VHDX_OK && !faulted)
            violation(I_OPEN_MODES_DISAGREE, NULL, "writable open works, read-only fails: %s",
                      describe(&ro.diag));
        if (open_written > BOUND(B_OPEN_WRITE_BASE) + log_length + base.image.size)
            violation(I_BOUND, "open_write", "the writable open wrote %llu bytes (log %llu, "
                      "file %llu)", (unsigned long long)open_written,
                      (unsigned long long)log_length, (unsigned long long)base.image.size);
        if (size_after_open > base.image.size &&
            size_after_open > geometry_max(&info, base.image.size))
            violation(I_BOUND, "open_grow", "the writable open grew the file from %llu to %llu "
                      "bytes; this geometry needs at most %llu", (unsigned long long)base.image.size,
                      (unsigned long long)size_after_open,
                      (unsigned long long)geometry_max(&info, base.image.size));
        if (ro.rc == VHDX_OK && !w.count.injected) {
            int k;

            in_place = ro.samples;
            samples_read(&in_place, disk, info.logical_sector_size);
            k = samples_differ(&ro.samples, &in_place);
            if (k >= 0)
                violation(I_REPLAY_DIFFERS, NULL, "sample %d (sectors %llu+%llu) reads "
                          "differently after the in-place replay", k,
                          (unsigned long long)in_place.sector[k],
                          (unsigned long long)in_place.count[k]);
        }
        workload_plan(&wl, &info, plan.writes, plan.seed);
        cost_start(&w, &cost);
        run_workload(disk, &wl, &info);
        rc = vhdx_close(disk, &diag);
        faulted = open_injected || w.count.injected;
        if (!faulted && unexpected_failure(rc))
            violation(I_CALL_FAILED, NULL, "close failed with no fault: %s", describe(&diag));
        /* A close after a failed write or flush returns OK without flushing (the disk
         * refuses more work after a failure): only a clean run's close flushes. */
        if (rc == VHDX_OK && !wl.failure)
            wl.flushed = wl.acknowledged;
        cost_check(&w, &cost, w.image.size, log_length, "writes and close");
        if (w.count.bytes_written > wl.user_bytes + wl.blocks_touched * (info.block_size +
                16 * KiB) + (wl.flush_calls + 2) * BOUND(B_WORKLOAD_WRITE_PER_FLUSH))
            violation(I_BOUND, "workload_write", "%llu bytes written for %llu bytes of data",
                      (unsigned long long)w.count.bytes_written,
                      (unsigned long long)wl.user_bytes);
        if (w.image.size > size_after_open + wl.blocks_touched * info.block_size + MiB)
            violation(I_BOUND, "workload_grow", "the file grew from %llu to %llu bytes",
                      (unsigned long long)size_after_open, (unsigned long long)w.image.size);
        if (!faulted && unexpected_failure(wl.failure))
            violation(I_CALL_FAILED, NULL, "a write or flush failed with no fault: %s",
                      describe(&wl.failure_diag));
    }
    if (faulted && plan.lose_unflushed)
        mem_file_lose_unflushed(&w);
    w.hook = NULL;
    memset(&w.fault, 0, sizeof w.fault);

    /* After the writes (or the fault): the file opens; what was flushed is there. */
    if (ro.rc == VHDX_OK) {
        /* A check-clean image stays check-clean; one that opened still opens. */
        unsigned again = check.rc == VHDX_OK ? VHDX_OPEN_CHECK : 0;

        if (current_header(&w, header))
            log_length = get_le(header + 68, 4);
        read_only_open(&w, again, plan.seed, &ro.samples, &after, log_length,
                       "open after the writes");
        if (after.rc != VHDX_OK)
            violation(faulted ? I_FAULT_UNOPENABLE : again ? I_CLEAN_NOT_CLEAN : I_WRITE_LOST,
                      NULL, "%s", describe(&after.diag));
        if (after.rc == VHDX_OK && !wl.issued && samples_differ(&ro.samples, &after.samples) >= 0)
            violation(faulted ? I_FLUSHED_LOST : I_REPLAY_DIFFERS, NULL, "sample %d reads "
                      "differently after the writable open", samples_differ(&ro.samples,
                                                                            &after.samples));
        if (after.rc == VHDX_OK && wl.issued) {
            struct mem_file v;

            mem_file_clone(&v, &w);
            mem_file_platform(&v, &p);
            if (vhdx_open(&p, 0, &disk, &diag) == VHDX_OK) {
                verify_workload(disk, &wl, wl.flushed == wl.issued,
                                faulted ? I_FLUSHED_LOST : I_WRITE_LOST, "after the writes");
                vhdx_close(disk, NULL);
            }
            /* The in-place replay of what the fault left must agree too. */
            if (faulted && vhdx_open(&p, VHDX_OPEN_WRITABLE, &disk, &diag) == VHDX_OK) {
                verify_workload(disk, &wl, false, I_FLUSHED_LOST, "after replaying the fault");
                vhdx_close(disk, NULL);
            } else if (faulted) {
                violation(I_FAULT_UNOPENABLE, NULL, "no writable open after the fault: %s",
                          describe(&diag));
            }
            if (v.alloc.live)
                violation(I_LEAK, NULL, "verification: %llu allocations survive",
                          (unsigned long long)v.alloc.live);
            mem_file_free(&v);
        }
    }
    free_workload(&wl);
    mem_file_free(&w);
    mem_file_free(&base);
    return 0;
}

/*
 * test_mem.c - the in-memory platform (platform/mem.c) against a flat byte-array model
 * and the host file system: sparse contents, copy-on-write snapshots, counters, the
 * allocation tracker, injected faults, the durable copy, and load/save.
 *
 * Usage: test_mem SCRATCH_DIR
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mem.h"
#include "vhdx.h"
#include "check.h"


static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

#define TiB (1ull << 40)
#define MiB (1ull << 20)

static void test_sparse(void)
{
    struct mem_file m;
    uint8_t buf[8192], page[4096];
    bool zero = true;

    mem_file_init(&m);
    memset(page, 0xA5, sizeof page);
    check(mem_file_poke(&m, 64 * TiB - 4096, page, sizeof page) && m.image.size == 64 * TiB,
          "sparse_poke_at_64_TiB", "size %llu", (unsigned long long)m.image.size);
    check(mem_file_pages(&m) == 1, "sparse_one_page_allocated", "%llu pages",
          (unsigned long long)mem_file_pages(&m));
    check(mem_file_peek(&m, 32 * TiB, buf, sizeof buf), "sparse_hole_readable", "");
    for (size_t i = 0; i < sizeof buf; i++)
        zero &= buf[i] == 0;
    check(zero, "sparse_hole_reads_zeros", "");
    check(mem_file_peek(&m, 64 * TiB - 8192, buf, sizeof buf) && buf[4095] == 0 &&
          buf[4096] == 0xA5 && buf[8191] == 0xA5, "sparse_hole_then_data", "");
    check(!mem_file_peek(&m, 64 * TiB - 4096, buf, 4097), "sparse_peek_past_end_refused", "");
    /* Zeros written into a hole do not allocate. */
    memset(buf, 0, sizeof buf);
    mem_file_poke(&m, 1 * TiB, buf, sizeof buf);
    check(mem_file_pages(&m) == 1, "sparse_zero_write_stays_hole", "%llu pages",
          (unsigned long long)mem_file_pages(&m));
    mem_file_resize(&m, 4096);
    check(mem_file_pages(&m) == 0 && m.image.size == 4096, "sparse_shrink_drops_pages", "");
    mem_file_free(&m);
}

/* Random reads, writes, grows and shrinks through the callbacks, against a flat array. */
static void test_model(void)
{
    enum { MAX = 3 << 20 };
    struct mem_file m;
    struct vhdx_platform p;
    uint8_t *model = calloc(MAX, 1), *buf = malloc(MAX);
    uint64_t size = 0, got;
    char why[160] = "";
    bool ok = true;

    mem_file_init(&m);
    mem_file_platform(&m, &p);
    for (int step = 0; step < 4000 && ok; step++) {
        unsigned kind = (unsigned)(rng() % 8);
        uint64_t off = size ? rng() % size : 0;
        size_t len = (size_t)(rng() % 20000);

        if (kind < 2) {             /* grow */
            uint64_t to = size + rng() % (MAX / 8);

            if (to > MAX)
                to = MAX;
            ok = p.grow(p.context, to) == VHDX_OK;
            if (to > size)
                size = to;
            snprintf(why, sizeof why, "grow to %llu", (unsigned long long)to);
        } else if (kind == 2 && step % 50 == 0) {   /* shrink (setup only) */
            uint64_t to = size / 2 + 1;

            mem_file_resize(&m, to);
            memset(model + to, 0, MAX - to);
            size = to;
        } else if (kind < 6) {      /* write */
            if (len > size - off)
                len = (size_t)(size - off);
            for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)(rng() % 3 ? 0 : rng());
            ok = p.write(p.context, off, buf, len) == VHDX_OK;
            memcpy(model + off, buf, len);
            snprintf(why, sizeof why, "write %zu at %llu", len, (unsigned long long)off);
        } else {                    /* read */
            if (len > size - off)
                len = (size_t)(size - off);
            ok = p.read(p.context, off, buf, len) == VHDX_OK && !memcmp(buf, model + off, len);
            snprintf(why, sizeof why, "read %zu at %llu differs", len, (unsigned long long)off);
        }
    }
    check(ok, "model_random_operations", "%s", why);
    ok = p.size(p.context, &got) == VHDX_OK && got == size &&
         p.read(p.context, 0, buf, (size_t)size) == VHDX_OK && !memcmp(buf, model, size);
    check(ok, "model_whole_file_matches", "size %llu vs %llu", (unsigned long long)got,
          (unsigned long long)size);
    check(p.read(p.context, size - 10, buf, 11) == VHDX_E_IO &&
          p.write(p.context, size, buf, 1) == VHDX_E_IO, "model_io_past_end_refused", "");
    check(m.count.bytes_written > 0 && m.count.reads > 0 && m.count.writes > 0,
          "model_counters_count", "");
    mem_file_free(&m);
    free(model);
    free(buf);
}

static void test_snapshots(void)
{
    struct mem_file m, copy;
    struct mem_image before;
    uint8_t a[4096], b[4096];
    uint64_t where = 0;

    mem_file_init(&m);
    memset(a, 1, sizeof a);
    mem_file_poke(&m, 10 * MiB, a, sizeof a);
    mem_snapshot(&m, &before);
    mem_file_clone(&copy, &m);
    check(mem_image_same(&m.image, &before, NULL) && mem_image_same(&copy.image, &m.image, NULL),
          "snapshot_equal_when_taken", "");
    a[100] = 7;
    mem_file_poke(&copy, 10 * MiB, a, sizeof a);
    check(mem_image_same(&m.image, &before, NULL), "snapshot_clone_write_is_private", "");
    check(!mem_image_same(&copy.image, &before, &where) && where == 10 * MiB + 100,
          "snapshot_first_difference", "at %llu", (unsigned long long)where);
    mem_file_peek(&m, 10 * MiB, b, sizeof b);
    check(b[100] == 1, "snapshot_original_untouched", "");
    mem_file_resize(&copy, 11 * MiB);
    check(!mem_image_same(&copy.image, &m.image, &where) && where == 10 * MiB + 100,
          "snapshot_size_difference_reports_bytes_first", "at %llu", (unsigned long long)where);
    mem_file_restore(&copy, &before);
    check(mem_image_same(&copy.image, &m.image, NULL), "snapshot_restore", "");
    mem_image_release(&before);
    mem_file_free(&copy);
    mem_file_free(&m);
}

static int hook_writes;
static uint64_t hook_last_offset;

static void count_writes(void *context, const struct mem_event *e)
{
    (void)context;
    if (e->op == MEM_OP_WRITE) {
        hook_writes++;
        hook_last_offset = e->offset;
    }
}

static void test_faults(void)
{
    struct mem_file m;
    struct vhdx_platform p;
    uint8_t buf[4096], back[4096];

    mem_file_init(&m);
    mem_file_resize(&m, 1 * MiB);
    mem_file_platform(&m, &p);
    m.hook = count_writes;
    memset(buf, 0x5A, sizeof buf);
    m.fault.write.nth = 2;
    m.fault.torn_keep = 1500;   /* two whole sectors */
    check(p.write(p.context, 0, buf, 4096) == VHDX_OK &&
          p.write(p.context, 8192, buf, 4096) == VHDX_E_IO &&
          p.write(p.context, 16384, buf, 4096) == VHDX_OK, "fault_nth_write_fails_once", "");
    mem_file_peek(&m, 8192, back, sizeof back);
    check(back[1023] == 0x5A && back[1024] == 0, "fault_torn_write_keeps_whole_sectors", "");
    check(hook_writes == 3 && hook_last_offset == 16384, "hook_sees_every_write", "%d",
          hook_writes);
    m.fault.flush.nth = 1;
    m.fault.flush.persist = true;
    check(p.flush(p.context) == VHDX_E_IO && p.flush(p.context) == VHDX_E_IO,
          "fault_persistent_flush", "");
    m.fault = (struct mem_faults){ .read = { 1, false }, .stop_after_fault = true };
    m.count.reads = 0;
    check(p.read(p.context, 0, back, 512) == VHDX_E_IO &&
          p.write(p.context, 0, buf, 512) == VHDX_E_IO && p.flush(p.context) == VHDX_E_IO &&
          p.grow(p.context, 2 * MiB) == VHDX_E_IO, "fault_power_cut_stops_all_io", "");
    m.fault = (struct mem_faults){ .grow_limit = 3 * MiB };
    check(p.grow(p.context, 3 * MiB) == VHDX_OK && p.grow(p.context, 3 * MiB + 1) ==
          VHDX_E_NO_SPACE, "fault_grow_limit", "");
    m.read_only = true;
    check(p.write(p.context, 0, buf, 512) == VHDX_E_READ_ONLY, "read_only_refuses_writes", "");
    mem_file_free(&m);
}

static void test_allocations(void)
{
    struct mem_file m;
    struct vhdx_platform p;
    void *a, *b, *c;

    mem_file_init(&m);
    mem_file_platform(&m, &p);
    a = p.allocate(p.context, 1000);
    b = p.allocate(p.context, 3000);
    p.release(p.context, a);
    c = p.allocate(p.context, 500);
    check(m.alloc.current == 3500 && m.alloc.peak == 4000 && m.alloc.live == 2,
          "alloc_tracks_current_and_peak", "current %llu peak %llu live %llu",
          (unsigned long long)m.alloc.current, (unsigned long long)m.alloc.peak,
          (unsigned long long)m.alloc.live);
    m.alloc.limit = 5000;
    check(!p.allocate(p.context, 2000) && m.alloc.refused == 1 &&
          m.alloc.peak_requested == 5500 && m.alloc.largest_request == 3000,
          "alloc_limit_refuses_and_records_the_request", "");
    m.fault.allocate.nth = m.alloc.calls + 1;
    check(!p.allocate(p.context, 1), "alloc_nth_fails", "");
    check(((uintptr_t)b % 16) == 0 && ((uintptr_t)c % 16) == 0, "alloc_aligned", "");
    p.release(p.context, b);
    p.release(p.context, c);
    check(m.alloc.current == 0 && m.alloc.live == 0, "alloc_all_released", "");
    mem_file_free(&m);
}

static void test_durable_and_fill(void)
{
    struct mem_file m;
    struct vhdx_platform p;
    uint8_t one[512], two[512], back[512];

    mem_file_init(&m);
    mem_file_resize(&m, 1 * MiB);
    mem_file_keep_durable(&m);
    mem_file_platform(&m, &p);
    memset(one, 1, sizeof one);
    memset(two, 2, sizeof two);
    p.write(p.context, 0, one, 512);
    p.flush(p.context);
    p.write(p.context, 0, two, 512);
    p.write(p.context, 4096, two, 512);
    p.grow(p.context, 2 * MiB);
    mem_file_lose_unflushed(&m);
    mem_file_peek(&m, 0, back, 512);
    check(!memcmp(back, one, 512) && m.image.size == 1 * MiB &&
          mem_file_peek(&m, 4096, back, 512) && back[0] == 0, "durable_power_cut_loses_unflushed",
          "");
    mem_file_grow_fill(&m, 0xEE);
    mem_file_platform(&m, &p);
    check(!(p.flags & VHDX_PLATFORM_GROW_ZEROES), "junk_fill_clears_grow_zeroes", "");
    check(p.grow(p.context, 3 * MiB) == VHDX_OK && mem_file_peek(&m, 1 * MiB - 1, back, 2) && back[0] == 0 && back[1] == 0xEE,
          "junk_fill_only_past_the_old_end", "%02x %02x", back[0], back[1]);
    mem_file_free(&m);
}

static void test_load_save(const char *dir)
{
    struct mem_file m, back;
    char path[512];
    struct stat st;
    uint8_t data[5000];
    uint64_t where = 0;

    snprintf(path, sizeof path, "%s/mem-save.bin", dir);
    mem_file_init(&m);
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 7 + 1);
    mem_file_poke(&m, 3, data, sizeof data);
    mem_file_poke(&m, 5 * TiB / 1024 + 77, data, sizeof data);   /* 5 GiB + 77 */
    mem_file_resize(&m, 6ull << 30);                              /* trailing hole */
    check(mem_file_save(&m, path) == 0 && stat(path, &st) == 0 &&
          (uint64_t)st.st_size == m.image.size && (uint64_t)st.st_blocks * 512 < 4 * MiB,
          "save_is_sparse_and_sized", "size %lld, %lld blocks", (long long)st.st_size,
          (long long)st.st_blocks);
    check(mem_file_load(&back, path) == 0 && mem_image_same(&back.image, &m.image, &where),
          "load_of_save_is_identical", "differs at %llu", (unsigned long long)where);
    check(mem_file_pages(&back) == mem_file_pages(&m), "load_keeps_holes", "%llu vs %llu pages",
          (unsigned long long)mem_file_pages(&back), (unsigned long long)mem_file_pages(&m));
    remove(path);
    mem_file_free(&back);
    mem_file_free(&m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_mem SCRATCH_DIR\n");
        return 2;
    }
    test_sparse();
    test_model();
    test_snapshots();
    test_faults();
    test_allocations();
    test_durable_and_fill();
    test_load_save(argv[1]);
    return failures ? 1 : 0;
}

/*
 * test_cache.c - the metadata cache at its limits, on the in-memory platform.
 *
 * - A one-page cache (4 KiB, one BAT page of 512 entries) on a disk whose BAT is many
 *   pages: allocating writes spread over every page, flushes, a reopen with the default
 *   cache: every write reads back, check is clean, and the cache's misses show it worked
 *   page by page.
 * - A BAT page that fails to read half-way through a request: a write spanning two
 *   blocks whose entries lie on different pages, with the Nth read after the request
 *   starts failing, for every N the request makes.  The request fails cleanly (an error,
 *   no crash); after it, more writes work; the file reopens, checks clean, and every
 *   block reads either what it held or what was written - nothing half-applied, no two
 *   blocks sharing space.
 * - A core allocation that fails at every point of an open: a clean refusal each time,
 *   no allocation left behind.
 *
 * Usage: test_cache
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "vhdx.h"
#include "check.h"

#define MIB (1u << 20)
#define SECTOR 512u
#define BLOCKS 4096u                /* 4 GiB of 1 MiB blocks: 9 BAT pages */


static int open_disk(struct mem_file *file, unsigned flags, size_t cache,
                     struct vhdx_disk **disk)
{
    struct vhdx_open_options options = { flags, cache };
    struct vhdx_platform p;
    struct vhdx_diag diag;

    mem_file_platform(file, &p);
    return vhdx_open_with(&p, &options, disk, &diag);
}

/* A block's worth of a pattern that names the block and a generation. */
static void fill(uint8_t *p, size_t length, uint64_t block, unsigned generation)
{
    for (size_t i = 0; i < length; i += 8) {
        uint64_t v = block * 0x9E3779B97F4A7C15ull ^ generation ^ i;

        memcpy(p + i, &v, 8);
    }
}

static void make_disk(struct mem_file *file)
{
    struct vhdx_create_options o;
    struct vhdx_platform p;
    struct vhdx_diag diag;

    memset(&o, 0, sizeof o);
    o.virtual_size = (uint64_t)BLOCKS * MIB;
    o.block_size = MIB;
    mem_file_init(file);
    file->quiet = true;
    mem_file_platform(file, &p);
    if (vhdx_create(&p, &o, &diag)) {
        printf("FAIL setup: vhdx_create failed (%d)\n", diag.code);
        exit(1);
    }
}

static void test_one_page_cache(void)
{
    struct mem_file file;
    struct vhdx_disk *disk;
    struct vhdx_info info;
    uint8_t *buf = malloc(MIB), *got = malloc(MIB);
    bool ok = true;

    make_disk(&file);
    if (open_disk(&file, VHDX_OPEN_WRITABLE, 4096, &disk)) {
        check(false, "one_page_cache_open", "the open failed");
        return;
    }
    /* Blocks on every BAT page, in an order that keeps evicting dirty pages. */
    for (unsigned k = 0; k < 64 && ok; k++) {
        uint64_t block = (uint64_t)(k * 577) % BLOCKS;

        fill(buf, MIB, block, 1);
        ok = !vhdx_write(disk, block * (MIB / SECTOR), MIB / SECTOR, buf);
        if (k % 16 == 15)
            ok = ok && !vhdx_flush(disk);
    }
    vhdx_get_info(disk, &info);
    check(ok && info.cache_pages == 1 && info.cache_misses >= 32, "one_page_cache_writes",
          "ok %d, %u pages, %llu misses", ok, info.cache_pages,
          (unsigned long long)info.cache_misses);
    check(!vhdx_close(disk, NULL) && file.alloc.live == 0, "one_page_cache_close",
          "%llu allocations left", (unsigned long long)file.alloc.live);
    if (open_disk(&file, VHDX_OPEN_CHECK, 0, &disk)) {
        check(false, "one_page_cache_reopen_checks_clean", "check failed: %s",
              file.last_problem);
        return;
    }
    for (unsigned k = 0; k < 64 && ok; k++) {
        uint64_t block = (uint64_t)(k * 577) % BLOCKS;

        fill(buf, MIB, block, 1);
        ok = !vhdx_read(disk, block * (MIB / SECTOR), MIB / SECTOR, got) &&
             !memcmp(buf, got, MIB);
    }
    check(ok, "one_page_cache_reopen_checks_clean_and_reads_back", "a block differs");
    vhdx_close(disk, NULL);
    mem_file_free(&file);
    free(buf);
    free(got);
}

/* Block `block` reads as zeros (never written) or as generation `generation`. */
static bool block_is(struct vhdx_disk *disk, uint64_t block, unsigned generation,
                     uint8_t *got, uint8_t *want)
{
    if (vhdx_read(disk, block * (MIB / SECTOR), MIB / SECTOR, got))
        return false;
    memset(want, 0, MIB);
    if (!memcmp(got, want, MIB))
        return true;
    fill(want, MIB, block, generation);
    return !memcmp(got, want, MIB);
}

static void test_page_fails_midway(void)
{
    uint8_t *buf = malloc(2 * MIB), *got = malloc(MIB), *want = malloc(MIB);
    struct mem_file base;
    unsigned tried = 0, failed_requests = 0;
    bool ok = true;
    char why[200] = "";

    make_disk(&base);
    /* Blocks 511 and 512: their entries (511 and 512) lie on BAT pages 0 and 1. */
    fill(buf, MIB, 511, 2);
    fill(buf + MIB, MIB, 512, 2);
    for (uint64_t n = 1; n <= 12 && ok; n++) {
        struct mem_file file;
        struct vhdx_disk *disk;
        uint64_t reads;
        int rc;

        mem_file_clone(&file, &base);
        file.quiet = true;
        if (open_disk(&file, VHDX_OPEN_WRITABLE, 4096, &disk)) {
            snprintf(why, sizeof why, "open %llu failed", (unsigned long long)n);
            ok = false;
            break;
        }
        /* The Nth read from here on fails, once. */
        reads = file.count.reads;
        file.fault.read.nth = reads + n;
        rc = vhdx_write(disk, 511 * (MIB / SECTOR), 2 * MIB / SECTOR, buf);
        tried++;
        failed_requests += rc != VHDX_OK;
        file.fault.read.nth = 0;
        /* The disk goes on: another block, then a flush and a close. */
        fill(got, MIB, 2000, 3);
        if (vhdx_write(disk, 2000 * (MIB / SECTOR), MIB / SECTOR, got) || vhdx_flush(disk) ||
            vhdx_close(disk, NULL)) {
            snprintf(why, sizeof why, "fault at read %llu: the disk did not go on",
                     (unsigned long long)n);
            ok = false;
        } else if (open_disk(&file, VHDX_OPEN_CHECK, 0, &disk)) {
            snprintf(why, sizeof why, "fault at read %llu: check after: %.120s",
                     (unsigned long long)n, file.last_problem);
            ok = false;
        } else {
            if (!block_is(disk, 511, 2, got, want) || !block_is(disk, 512, 2, got, want) ||
                !block_is(disk, 2000, 3, got, want)) {
                snprintf(why, sizeof why, "fault at read %llu: a block holds a mix",
                         (unsigned long long)n);
                ok = false;
            }
            if (rc == VHDX_OK && ok) {
                /* The request succeeded (the fault missed it): both blocks are there. */
                fill(want, MIB, 511, 2);
                vhdx_read(disk, 511 * (MIB / SECTOR), MIB / SECTOR, got);
                ok = !memcmp(got, want, MIB);
                if (!ok)
                    snprintf(why, sizeof why, "fault at read %llu: success, data lost",
                             (unsigned long long)n);
            }
            vhdx_close(disk, NULL);
        }
        if (file.alloc.live) {
            snprintf(why, sizeof why, "fault at read %llu: %llu allocations left",
                     (unsigned long long)n, (unsigned long long)file.alloc.live);
            ok = false;
        }
        mem_file_free(&file);
    }
    check(ok && failed_requests > 0, "bat_page_read_fails_midway_nothing_half_applied",
          "%s (%u of %u requests failed)", why, failed_requests, tried);
    mem_file_free(&base);
    free(buf);
    free(got);
    free(want);
}

static void test_allocation_fails(void)
{
    struct mem_file base;
    uint8_t *buf = malloc(MIB);
    bool ok = true, opened = false;
    char why[160] = "";

    make_disk(&base);
    fill(buf, MIB, 7, 4);
    {
        struct vhdx_disk *disk;

        open_disk(&base, VHDX_OPEN_WRITABLE, 0, &disk);
        vhdx_write(disk, 7 * (MIB / SECTOR), MIB / SECTOR, buf);
        vhdx_close(disk, NULL);
    }
    for (uint64_t n = 1; n <= 40 && ok && !opened; n++) {
        struct mem_file file;
        struct vhdx_disk *disk;
        int rc;

        mem_file_clone(&file, &base);
        file.quiet = true;
        file.fault.allocate.nth = n;
        rc = open_disk(&file, VHDX_OPEN_WRITABLE, 0, &disk);
        if (rc == VHDX_OK) {
            opened = true;              /* past the open's last allocation */
            vhdx_close(disk, NULL);
        } else if (vhdx_error_class((enum vhdx_error)rc) != VHDX_CLASS_NO_MEMORY) {
            snprintf(why, sizeof why, "allocation %llu: error %d, not out of memory",
                     (unsigned long long)n, rc);
            ok = false;
        }
        if (file.alloc.live) {
            snprintf(why, sizeof why, "allocation %llu: %llu allocations left",
                     (unsigned long long)n, (unsigned long long)file.alloc.live);
            ok = false;
        }
        mem_file_free(&file);
    }
    check(ok && opened, "allocation_failure_at_every_point_of_an_open", "%s", why);
    mem_file_free(&base);
    free(buf);
}

int main(void)
{
    test_one_page_cache();
    test_page_fails_midway();
    test_allocation_fails();
    return failures ? 1 : 0;
}

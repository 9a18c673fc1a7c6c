/*
 * bench_huge - a disk whose BAT is much larger than the metadata cache: open time, and
 * random 4 KiB reads over the whole disk (most blocks absent: each miss costs a BAT page).
 *
 * Usage: bench_huge IMAGE [CACHE_BYTES]
 * Prints "open SECONDS", "random_4K MiB/s READS", "cache HITS MISSES PAGES",
 * "core_peak BYTES".
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "posix.h"
#include "vhdx.h"

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    struct vhdx_open_options options = { 0, 0 };
    struct posix_file file;
    struct vhdx_platform platform;
    struct vhdx_disk *disk;
    struct vhdx_diag diag;
    struct vhdx_info info;
    static uint8_t buf[4096];
    const unsigned reads = 200000;
    double t0, t1, t2;
    uint64_t state = 42, sectors;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: bench_huge IMAGE [CACHE_BYTES]\n");
        return 2;
    }
    if (argc == 3)
        options.cache_bytes = strtoull(argv[2], NULL, 0);
    if (posix_file_open(&file, argv[1], false, &platform))
        return 1;
    t0 = now();
    if (vhdx_open_with(&platform, &options, &disk, &diag)) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    t1 = now();
    vhdx_get_info(disk, &info);
    sectors = info.virtual_size / info.logical_sector_size;
    for (unsigned i = 0; i < reads; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        if (vhdx_read(disk, (state >> 11) % (sectors - 8) / 8 * 8, 8, buf)) {
            fprintf(stderr, "read failed\n");
            return 1;
        }
    }
    t2 = now();
    vhdx_get_info(disk, &info);
    printf("open %.3f\n", t1 - t0);
    printf("random_4K %.1f %u\n", reads * 4096.0 / (1 << 20) / (t2 - t1), reads);
    printf("cache %llu %llu %u\n", (unsigned long long)info.cache_hits,
           (unsigned long long)info.cache_misses, info.cache_pages);
    printf("core_peak %llu\n", (unsigned long long)info.memory_peak);
    vhdx_close(disk, NULL);
    posix_file_close(&file);
    return 0;
}

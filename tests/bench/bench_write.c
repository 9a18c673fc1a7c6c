/*
 * bench_write - allocating 4 KiB writes, each followed by a flush, through the core.
 *
 * Usage: bench_write IMAGE OFFSETS
 *        bench_write IMAGE --sequential MIB
 * OFFSETS is a text file of byte offsets (one per line), the same list given to qemu-io
 * by tests/bench/run.sh.  For each: write 4 KiB of fresh data at that offset, then
 * vhdx_flush (durable: data, then the BAT through the log, fdatasync'd).  Prints the
 * number of writes, the elapsed seconds and the platform flush count.
 * --sequential: MIB MiB of a byte pattern from offset 0 in 4 MiB requests, then close
 * (which flushes), like `qemu-io -c "write -P 0x5a 0 64M" -c flush`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "posix.h"
#include "vhdx.h"

static int sequential(const char *image, unsigned mib)
{
    struct posix_file file;
    struct vhdx_platform platform;
    struct vhdx_disk *disk;
    struct vhdx_diag diag;
    const size_t request = 4u << 20;
    uint8_t *data = malloc(request);

    if (!data || posix_file_open(&file, image, true, &platform) ||
        vhdx_open(&platform, VHDX_OPEN_WRITABLE, &disk, &diag))
        return 1;
    memset(data, 0x5a, request);
    for (uint64_t off = 0; off < (uint64_t)mib << 20; off += request) {
        if (vhdx_write(disk, off / 512, request / 512, data))
            return 1;
    }
    if (vhdx_close(disk, &diag))
        return 1;
    posix_file_close(&file);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    struct posix_file file;
    struct vhdx_platform platform;
    struct vhdx_disk *disk;
    struct vhdx_diag diag;
    struct timespec a, b;
    unsigned long long offset;
    unsigned count = 0;
    uint8_t data[4096];
    FILE *list;

    if (argc == 4 && !strcmp(argv[2], "--sequential"))
        return sequential(argv[1], (unsigned)atoi(argv[3]));
    if (argc != 3 || !(list = fopen(argv[2], "r"))) {
        fprintf(stderr, "usage: bench_write IMAGE OFFSETS | IMAGE --sequential MIB\n");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &a);
    if (posix_file_open(&file, argv[1], true, &platform) ||
        vhdx_open(&platform, VHDX_OPEN_WRITABLE, &disk, &diag)) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    while (fscanf(list, "%llu", &offset) == 1) {
        memset(data, (int)(count % 255) + 1, sizeof data);
        if (vhdx_write(disk, offset / 512, 8, data) || vhdx_flush(disk)) {
            char text[200];

            vhdx_describe(vhdx_last_diag(disk), text, sizeof text);
            fprintf(stderr, "write %u failed: %s\n", count, text);
            return 1;
        }
        count++;
    }
    if (vhdx_close(disk, &diag))
        return 1;
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%u %.3f %llu\n", count, (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9,
           file.flushes);
    posix_file_close(&file);
    fclose(list);
    return 0;
}

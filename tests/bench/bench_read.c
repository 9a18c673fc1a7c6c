/*
 * bench_read - read throughput of the core against pread of the same data as a raw file.
 *
 * Usage: bench_read IMAGE RAW
 * IMAGE and RAW hold the same virtual disk (RAW from qemu-img convert).  For request
 * sizes of 4 KiB, 64 KiB and 1 MiB it reads the whole disk sequentially through the core
 * (the POSIX platform, as the vhdx tool uses it) and through pread on RAW, and 262144
 * random 4 KiB requests through both; best of 5 runs, taking turns; the page cache is warm (a first
 * pass reads everything).  Prints one line per measurement: "NAME core MiB/s raw MiB/s".
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "posix.h"
#include "vhdx.h"

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct target {
    struct vhdx_disk *disk;
    int raw_fd;
    uint64_t size;
};

static int read_at(struct target *t, bool core, uint64_t offset, void *buf, size_t len)
{
    if (core)
        return vhdx_read(t->disk, offset / 512, len / 512, buf);
    return pread(t->raw_fd, buf, len, (off_t)offset) == (ssize_t)len ? 0 : -1;
}

/* MiB/s of one pass: sequential if `offsets` is NULL, else at the given offsets. */
static double pass(struct target *t, bool core, size_t request, const uint64_t *offsets,
                   size_t count, void *buf)
{
    double start = now();
    uint64_t bytes = 0;

    if (!offsets) {
        for (uint64_t off = 0; off + request <= t->size; off += request, bytes += request) {
            if (read_at(t, core, off, buf, request)) {
                fprintf(stderr, "read failed at %llu\n", (unsigned long long)off);
                exit(1);
            }
        }
    } else {
        for (size_t i = 0; i < count; i++, bytes += request) {
            if (read_at(t, core, offsets[i], buf, request)) {
                fprintf(stderr, "read failed\n");
                exit(1);
            }
        }
    }
    return bytes / (1024.0 * 1024.0) / (now() - start);
}

/*
 * Best of 5 for the core and for raw pread, the passes taking turns so that anything
 * slowing the machine for a while hits both alike.
 */
static void best_pair(struct target *t, size_t request, const uint64_t *offsets,
                      size_t count, void *buf, double *core, double *raw)
{
    *core = *raw = 0;
    for (int run = 0; run < 5; run++) {
        double c = pass(t, true, request, offsets, count, buf);
        double r = pass(t, false, request, offsets, count, buf);

        if (c > *core)
            *core = c;
        if (r > *raw)
            *raw = r;
    }
}

int main(int argc, char **argv)
{
    static const size_t sizes[] = { 4096, 65536, 1 << 20 };
    struct posix_file file;
    struct vhdx_platform platform;
    struct vhdx_diag diag;
    struct vhdx_info info;
    struct target t;
    uint64_t *offsets;
    void *buf;
    size_t count = 262144;

    if (argc != 3) {
        fprintf(stderr, "usage: bench_read IMAGE RAW\n");
        return 2;
    }
    if (posix_file_open(&file, argv[1], false, &platform) ||
        vhdx_open(&platform, 0, &t.disk, &diag)) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    vhdx_get_info(t.disk, &info);
    t.size = info.virtual_size;
    t.raw_fd = open(argv[2], O_RDONLY);
    if (t.raw_fd < 0 || posix_memalign(&buf, 4096, 1 << 20))
        return 1;
    offsets = malloc(count * sizeof *offsets);
    srand(42);
    for (size_t i = 0; i < count; i++)
        offsets[i] = ((uint64_t)rand() * 4096) % (t.size - 4096) / 4096 * 4096;
    /* Warm the page cache for both files. */
    pass(&t, true, 1 << 20, NULL, 0, buf);
    pass(&t, false, 1 << 20, NULL, 0, buf);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        double core, raw;

        best_pair(&t, sizes[k], NULL, 0, buf, &core, &raw);
        printf("sequential_%zuK %.0f %.0f\n", sizes[k] / 1024, core, raw);
    }
    {
        double core, raw;

        best_pair(&t, 4096, offsets, count, buf, &core, &raw);
        printf("random_4K %.0f %.0f\n", core, raw);
    }
    vhdx_close(t.disk, NULL);
    posix_file_close(&file);
    free(offsets);
    free(buf);
    return 0;
}

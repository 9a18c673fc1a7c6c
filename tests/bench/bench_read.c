/*
 * bench_read - read throughput of the core against pread of the same data as a raw file.
 *
 * Usage: bench_read IMAGE RAW [IMAGE2]
 * IMAGE and RAW hold the same virtual disk (RAW from qemu-img convert).  For request
 * sizes of 4 KiB, 64 KiB and 1 MiB it reads the whole disk sequentially through the core
 * (the POSIX platform, as the vhdx tool uses it) and through pread on RAW, and 262144
 * random 4 KiB requests through both; best of 5 runs, taking turns; the page cache is warm (a first
 * pass reads everything).  Prints one line per measurement: "NAME core MiB/s raw MiB/s",
 * and with IMAGE2 (the same disk in another image, e.g. a chain against a flat file),
 * read in the same turns, a third figure: "NAME core raw core2".
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
    struct vhdx_disk *disks[2];     /* IMAGE, IMAGE2 (or NULL) */
    int raw_fd;
    uint64_t size;
};

/* Which reads a pass does: through disks[0], through raw pread, through disks[1]. */
enum reader { CORE, RAW, CORE2 };

static int read_at(struct target *t, enum reader r, uint64_t offset, void *buf, size_t len)
{
    if (r != RAW)
        return vhdx_read(t->disks[r == CORE2], offset / 512, len / 512, buf);
    return pread(t->raw_fd, buf, len, (off_t)offset) == (ssize_t)len ? 0 : -1;
}

/* MiB/s of one pass: sequential if `offsets` is NULL, else at the given offsets. */
static double pass(struct target *t, enum reader core, size_t request, const uint64_t *offsets,
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
static void best_of(struct target *t, size_t request, const uint64_t *offsets,
                    size_t count, void *buf, double best[3])
{
    best[CORE] = best[RAW] = best[CORE2] = 0;
    for (int run = 0; run < 5; run++) {
        for (enum reader r = CORE; r <= (t->disks[1] ? CORE2 : RAW); r++) {
            double rate = pass(t, r, request, offsets, count, buf);

            if (rate > best[r])
                best[r] = rate;
        }
    }
}

static void print_line(const struct target *t, const char *name, const double best[3])
{
    printf("%s %.0f %.0f", name, best[CORE], best[RAW]);
    if (t->disks[1])
        printf(" %.0f", best[CORE2]);
    printf("\n");
}

int main(int argc, char **argv)
{
    static const size_t sizes[] = { 4096, 65536, 1 << 20 };
    struct posix_file file, file2;
    struct vhdx_platform platform, platform2;
    struct vhdx_diag diag;
    struct vhdx_info info;
    struct target t = { { NULL, NULL }, -1, 0 };
    char name[32];
    uint64_t *offsets;
    void *buf;
    size_t count = 262144;

    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: bench_read IMAGE RAW [IMAGE2]\n");
        return 2;
    }
    if (posix_file_open(&file, argv[1], false, &platform) ||
        vhdx_open(&platform, 0, &t.disks[0], &diag)) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    if (argc == 4 && (posix_file_open(&file2, argv[3], false, &platform2) ||
                      vhdx_open(&platform2, 0, &t.disks[1], &diag))) {
        fprintf(stderr, "cannot open %s\n", argv[3]);
        return 1;
    }
    vhdx_get_info(t.disks[0], &info);
    t.size = info.virtual_size;
    t.raw_fd = open(argv[2], O_RDONLY);
    if (t.raw_fd < 0 || posix_memalign(&buf, 4096, 1 << 20))
        return 1;
    offsets = malloc(count * sizeof *offsets);
    srand(42);
    for (size_t i = 0; i < count; i++)
        offsets[i] = ((uint64_t)rand() * 4096) % (t.size - 4096) / 4096 * 4096;
    /* Warm the page cache for every file. */
    for (enum reader r = CORE; r <= (t.disks[1] ? CORE2 : RAW); r++)
        pass(&t, r, 1 << 20, NULL, 0, buf);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        double best[3];

        best_of(&t, sizes[k], NULL, 0, buf, best);
        snprintf(name, sizeof name, "sequential_%zuK", sizes[k] / 1024);
        print_line(&t, name, best);
    }
    {
        double best[3];

        best_of(&t, 4096, offsets, count, buf, best);
        print_line(&t, "random_4K", best);
    }
    vhdx_close(t.disks[0], NULL);
    posix_file_close(&file);
    if (t.disks[1]) {
        vhdx_close(t.disks[1], NULL);
        posix_file_close(&file2);
    }
    free(offsets);
    free(buf);
    return 0;
}

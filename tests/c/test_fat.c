/*
 * Host harness for platform/fat.c, driven by tests/fat.test.
 *
 *   test_fat IMAGE PATH OUT [options]
 *
 * Mounts the FAT volume in IMAGE, looks up PATH, maps it to extents and copies the file
 * into OUT by reading the image through those extents (fat_extent_lookup on every chunk),
 * so the suite can compare OUT with the original.  Prints "key value" lines: type,
 * geometry, size, extents, and read-callback statistics.  Also checks the extent list's
 * invariants and fat_extent_lookup against a linear search.
 *
 * Options:
 *   --partition-offset N  the volume starts N bytes into IMAGE
 *   --partition-size N    size of the partition (default: rest of the image)
 *   --no-size             do not tell fat_mount the partition size
 *   --list                print the extents
 *   --read-file           also read the file with fat_read_file and compare
 *   --capacity N          give fat_map an array of N extents instead of the counted size
 *
 * Exit status: 0 success, 1 FAT error (printed as "error: <step>: <fat_strerror>"),
 * 2 usage or host error, 3 an invariant of the result is broken.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fat.h"

struct image {
    int fd;
    uint64_t partition_offset;
    uint64_t partition_bytes; /* the readable range; reads past it fail */
    uint32_t sector_bytes;    /* 0 until mounted: alignment is checked from then on */
    unsigned long reads, unaligned_reads;
};

/* Reads partition bytes; fails past the partition's end, like a real disk. */
static int read_partition(struct image *img, uint64_t offset, void *buf, uint32_t len)
{
    if (offset > img->partition_bytes || len > img->partition_bytes - offset)
        return -1;
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(img->fd, p, len, (off_t)(img->partition_offset + offset));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        offset += (uint64_t)n;
        len -= (uint32_t)n;
    }
    return 0;
}

/* The library's read callback: also counts reads that are not whole sectors. */
static int read_image(void *ctx, uint64_t offset, void *buf, uint32_t len)
{
    struct image *img = ctx;
    img->reads++;
    if (img->sector_bytes != 0 && (offset % img->sector_bytes != 0 || len % img->sector_bytes != 0))
        img->unaligned_reads++;
    return read_partition(img, offset, buf, len);
}

static int fail_fat(const char *step, enum fat_error err, const struct fat_volume *vol)
{
    if (err == FAT_E_NOT_FAT && vol->detail != NULL)
        printf("error: %s: %s (%s)\n", step, fat_strerror(err), vol->detail);
    else
        printf("error: %s: %s\n", step, fat_strerror(err));
    return 1;
}

static int broken(const char *what)
{
    printf("invariant broken: %s\n", what);
    return 3;
}

static int compare_volume_offset(const void *a, const void *b)
{
    uint64_t x = ((const struct fat_extent *)a)->volume_offset;
    uint64_t y = ((const struct fat_extent *)b)->volume_offset;
    return x < y ? -1 : x > y;
}

/* The extents must tile [0, size), be merged maximally, and stay inside the data area
   without overlapping one another. */
static int check_extents(const struct fat_volume *vol, const struct fat_extent *ext, uint32_t n,
                         uint64_t size)
{
    uint64_t expect = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (ext[i].file_offset != expect || ext[i].length == 0)
            return broken("extents do not tile the file");
        if (ext[i].volume_offset < vol->data_offset ||
            ext[i].volume_offset + ext[i].length > vol->volume_bytes)
            return broken("extent outside the data area");
        if ((ext[i].volume_offset - vol->data_offset) % vol->bytes_per_cluster != 0)
            return broken("extent not cluster aligned");
        if (i + 1 < n && ext[i].volume_offset + ext[i].length == ext[i + 1].volume_offset)
            return broken("adjacent extents not merged");
        if (i + 1 < n && ext[i].length % vol->bytes_per_cluster != 0)
            return broken("inner extent not whole clusters");
        expect += ext[i].length;
    }
    if (expect != size)
        return broken("extents do not add up to the file size");

    struct fat_extent *sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (sorted == NULL)
        return 2;
    memcpy(sorted, ext, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, compare_volume_offset);
    int rc = 0;
    for (uint32_t i = 0; i + 1 < n; i++)
        if (sorted[i].volume_offset + sorted[i].length > sorted[i + 1].volume_offset)
            rc = broken("extents overlap on the volume");
    free(sorted);
    return rc;
}

/* fat_extent_lookup against a linear search, at every extent edge and in between. */
static int check_lookup(const struct fat_extent *ext, uint32_t n, uint64_t size)
{
    uint64_t probes[8];
    for (uint32_t i = 0; i <= n; i++) {
        uint64_t start = i < n ? ext[i].file_offset : size;
        uint64_t len = i < n ? ext[i].length : 0;
        int np = 0;
        probes[np++] = start;
        probes[np++] = start + len / 2;
        probes[np++] = start + (len ? len - 1 : 0);
        if (start > 0)
            probes[np++] = start - 1;
        probes[np++] = start + len; /* next extent's start, or the end of the file */
        probes[np++] = UINT64_MAX;
        for (int k = 0; k < np; k++) {
            uint64_t off = probes[k], vo = 0, cont = 0;
            bool found = fat_extent_lookup(ext, n, off, &vo, &cont);
            bool want = false;
            uint64_t want_vo = 0, want_cont = 0;
            for (uint32_t j = 0; j < n; j++) {
                if (off >= ext[j].file_offset && off - ext[j].file_offset < ext[j].length) {
                    want = true;
                    want_vo = ext[j].volume_offset + (off - ext[j].file_offset);
                    want_cont = ext[j].length - (off - ext[j].file_offset);
                }
            }
            if (found != want || (found && (vo != want_vo || cont != want_cont))) {
                printf("lookup of %" PRIu64 ": got %d %" PRIu64 " %" PRIu64 ", want %d %" PRIu64
                       " %" PRIu64 "\n", off, found, vo, cont, want, want_vo, want_cont);
                return broken("fat_extent_lookup disagrees with a linear search");
            }
        }
    }
    return 0;
}

/* Copies the file to out through the extents, in chunks that never cross an extent. */
static int copy_out(struct image *img, const struct fat_extent *ext, uint32_t n, uint64_t size,
                    FILE *out, uint8_t *whole)
{
    static uint8_t chunk[1 << 20];
    uint64_t offset = 0;
    while (offset < size) {
        uint64_t volume_offset, contiguous;
        if (!fat_extent_lookup(ext, n, offset, &volume_offset, &contiguous))
            return broken("file offset inside the file not mapped");
        uint32_t len = contiguous < sizeof chunk ? (uint32_t)contiguous : (uint32_t)sizeof chunk;
        if (len > size - offset)
            return broken("extent runs past the file size");
        if (read_partition(img, volume_offset, chunk, len) != 0) {
            printf("error: data: host read failed at volume offset %" PRIu64 "\n", volume_offset);
            return 2;
        }
        if (fwrite(chunk, 1, len, out) != len)
            return 2;
        if (whole != NULL)
            memcpy(whole + offset, chunk, len);
        offset += len;
    }
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: test_fat IMAGE PATH OUT [--partition-offset N] [--partition-size N]"
                    " [--no-size] [--list] [--read-file] [--capacity N]\n");
    return 2;
}

static int run(int argc, char **argv, struct image *img, struct fat_volume *vol)
{
    if (argc < 4)
        return usage();
    const char *image_path = argv[1], *path = argv[2], *out_path = argv[3];
    uint64_t partition_size = 0;
    bool have_size = false, no_size = false, list = false, read_file = false, have_capacity = false;
    uint32_t capacity = 0;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--partition-offset") == 0 && i + 1 < argc)
            img->partition_offset = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--partition-size") == 0 && i + 1 < argc)
            partition_size = strtoull(argv[++i], NULL, 0), have_size = true;
        else if (strcmp(argv[i], "--capacity") == 0 && i + 1 < argc)
            capacity = (uint32_t)strtoul(argv[++i], NULL, 0), have_capacity = true;
        else if (strcmp(argv[i], "--no-size") == 0)
            no_size = true;
        else if (strcmp(argv[i], "--list") == 0)
            list = true;
        else if (strcmp(argv[i], "--read-file") == 0)
            read_file = true;
        else
            return usage();
    }

    img->fd = open(image_path, O_RDONLY);
    struct stat st;
    if (img->fd < 0 || fstat(img->fd, &st) != 0) {
        fprintf(stderr, "test_fat: %s: %s\n", image_path, strerror(errno));
        return 2;
    }
    uint64_t image_bytes = (uint64_t)st.st_size;
    uint64_t rest = image_bytes > img->partition_offset ? image_bytes - img->partition_offset : 0;
    img->partition_bytes = have_size ? partition_size : rest;

    enum fat_error err = fat_mount(vol, read_image, img, no_size ? 0 : img->partition_bytes);
    if (!no_size && img->partition_bytes == 0 && err == FAT_OK)
        return broken("mounted an empty partition");
    if (no_size)
        img->partition_bytes = rest; /* the library does not know; reads past the image fail */
    if (err != FAT_OK)
        return fail_fat("mount", err, vol);
    img->sector_bytes = vol->bytes_per_sector;
    printf("type FAT%d\n", (int)vol->type);
    printf("sector_bytes %" PRIu32 "\n", vol->bytes_per_sector);
    printf("cluster_bytes %" PRIu32 "\n", vol->bytes_per_cluster);
    printf("cluster_count %" PRIu32 "\n", vol->cluster_count);
    printf("fat_offset %" PRIu64 "\n", vol->fat_offset);
    printf("data_offset %" PRIu64 "\n", vol->data_offset);
    printf("root_dir_offset %" PRIu64 "\n", vol->root_dir_offset);

    struct fat_file file;
    err = fat_lookup(vol, path, &file);
    if (err != FAT_OK)
        return fail_fat("lookup", err, vol);
    printf("directory %s\n", file.is_directory ? "yes" : "no");
    printf("first_cluster %" PRIu32 "\n", file.first_cluster);
    printf("entry_offset %" PRIu64 "\n", file.entry_offset);
    printf("attributes 0x%02x\n", file.attributes);
    printf("size %" PRIu32 "\n", file.size);

    uint32_t count = 0;
    err = fat_map(vol, &file, NULL, 0, &count);
    if (err != FAT_OK)
        return fail_fat("map", err, vol);
    uint32_t slots = have_capacity ? capacity : count;
    struct fat_extent *ext = calloc(slots ? slots : 1, sizeof *ext);
    if (ext == NULL)
        return 2;
    uint32_t filled = 0;
    err = fat_map(vol, &file, ext, slots, &filled);
    if (err != FAT_OK) {
        printf("extents_needed %" PRIu32 "\n", filled);
        free(ext);
        return fail_fat("map", err, vol);
    }
    printf("extents %" PRIu32 "\n", filled);
    int rc = filled == count ? 0 : broken("counting and filling disagree");
    if (rc == 0)
        rc = check_extents(vol, ext, filled, file.size);
    if (rc == 0)
        rc = check_lookup(ext, filled, file.size);
    if (rc == 0 && list)
        for (uint32_t i = 0; i < filled; i++)
            printf("extent %" PRIu32 " file %" PRIu64 " volume %" PRIu64 " length %" PRIu64 "\n", i,
                   ext[i].file_offset, ext[i].volume_offset, ext[i].length);

    uint8_t *whole = NULL;
    if (rc == 0 && read_file && (whole = malloc(file.size ? file.size : 1)) == NULL)
        rc = 2;
    if (rc == 0) {
        FILE *out = fopen(out_path, "wb");
        if (out == NULL) {
            fprintf(stderr, "test_fat: %s: %s\n", out_path, strerror(errno));
            rc = 2;
        } else {
            rc = copy_out(img, ext, filled, file.size, out, whole);
            if (fclose(out) != 0 && rc == 0)
                rc = 2;
        }
    }
    if (rc == 0 && read_file) {
        /* Exactly file.size bytes, so ASan catches any overrun. */
        uint8_t *buf = malloc(file.size ? file.size : 1);
        if (buf == NULL) {
            rc = 2;
        } else {
            err = fat_read_file(vol, &file, buf, file.size);
            if (err != FAT_OK)
                rc = fail_fat("read_file", err, vol);
            else if (memcmp(buf, whole, file.size) != 0)
                rc = broken("fat_read_file differs from the extent read");
            else if (file.size > 0 && fat_read_file(vol, &file, buf, file.size - 1) != FAT_E_FILE_TOO_LARGE)
                rc = broken("fat_read_file accepted a buffer one byte too small");
            else
                printf("read_file ok\n");
            free(buf);
        }
    }
    free(whole);
    free(ext);
    printf("reads %lu unaligned %lu\n", img->reads, img->unaligned_reads);
    return rc;
}

int main(int argc, char **argv)
{
    struct image img = {.fd = -1};
    struct fat_volume *vol = malloc(sizeof *vol);
    if (vol == NULL)
        return 2;
    memset(vol, 0xA5, sizeof *vol); /* fat_mount must not rely on zeroed memory */
    int rc = run(argc, argv, &img, vol);
    if (img.fd >= 0)
        close(img.fd);
    free(vol);
    fflush(stdout);
    return rc;
}

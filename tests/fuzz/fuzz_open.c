/*
 * fuzz_open.c - libFuzzer target: hostile edits of a valid VHDX, then open, read, write.
 *
 * Whole images are megabytes, too big to mutate blindly, so the fuzzer's input is a
 * list of edits applied to a valid base image (FUZZ_BASE, made by tests/vhdxgen.py with
 * a dirty log): each edit names one of the structures (identifier, headers, region
 * tables, log, metadata table and items, BAT), an offset in it and bytes to write, and
 * may re-seal the checksums so that edits reach the checks behind them.  Every outcome
 * is fine except a crash, a sanitizer report or a hang.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined (tests/fuzz/run.sh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memfile.h"
#include "vhdx.h"

static struct memfile base;

static const struct {
    uint64_t offset, length;
} areas[] = {
    { 0, 4096 },                     /* file identifier */
    { 64 * 1024, 4096 },             /* header 1 */
    { 128 * 1024, 4096 },            /* header 2 */
    { 192 * 1024, 4096 },            /* region table 1 (entries) */
    { 256 * 1024, 4096 },            /* region table 2 */
    { 1 << 20, 1 << 20 },            /* log (corruption_base layout) */
    { 2 << 20, 65536 + 4096 },       /* metadata table and items */
    { 3 << 20, 8192 },               /* BAT */
};

static uint32_t crc_sealed(uint8_t *p, size_t n)
{
    memset(p + 4, 0, 4);
    return vhdx_crc32c(0, p, n);
}

static void seal(uint8_t *file, unsigned what)
{
    uint32_t c;

    if (what & 1) {
        c = crc_sealed(file + 64 * 1024, 4096);
        memcpy(file + 64 * 1024 + 4, &c, 4);
    }
    if (what & 2) {
        c = crc_sealed(file + 128 * 1024, 4096);
        memcpy(file + 128 * 1024 + 4, &c, 4);
    }
    if (what & 4) {
        c = crc_sealed(file + 192 * 1024, 65536);
        memcpy(file + 192 * 1024 + 4, &c, 4);
    }
    if (what & 8) {
        /* The first log entry, if its length is sane. */
        uint8_t *e = file + (1 << 20);
        uint32_t length;

        memcpy(&length, e + 8, 4);
        if (length && length <= (1 << 20)) {
            c = crc_sealed(e, length);
            memcpy(e + 4, &c, 4);
        }
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *path = getenv("FUZZ_BASE");

    (void)argc;
    (void)argv;
    if (!path) {
        fprintf(stderr, "set FUZZ_BASE to a base image\n");
        exit(2);
    }
    memfile_load(&base, path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct memfile m;
    struct vhdx_platform p;
    struct vhdx_disk *disk;
    struct vhdx_diag diag;
    unsigned seal_mask = size ? data[0] : 0;
    size_t pos = 1;
    static uint8_t buf[1 << 20];

    memfile_copy(&m, &base);
    m.quiet = true;
    m.grow_limit = base.size + (64u << 20);     /* like a reserve: hostile logs may ask more */
    /* Edits: area (1 byte), offset (3 bytes), length (1 byte), bytes. */
    while (pos + 5 <= size) {
        unsigned area = data[pos] % (sizeof areas / sizeof areas[0]);
        uint64_t offset = (data[pos + 1] | data[pos + 2] << 8 | (uint64_t)data[pos + 3] << 16) %
                          areas[area].length;
        size_t length = data[pos + 4];

        pos += 5;
        if (length > size - pos)
            length = size - pos;
        if (offset + length > areas[area].length)
            length = (size_t)(areas[area].length - offset);
        if (areas[area].offset + offset + length <= m.size)
            memcpy(m.data + areas[area].offset + offset, data + pos, length);
        pos += length;
    }
    if (m.size > (4 << 20))
        seal(m.data, seal_mask);
    if (seal_mask & 0x80)
        m.size -= (seal_mask & 0x70) * 4096;     /* sometimes truncate */
    memfile_platform(&m, &p);
    for (int mode = 0; mode < 3; mode++) {
        unsigned flags = mode == 0 ? 0 : mode == 1 ? VHDX_OPEN_CHECK : VHDX_OPEN_WRITABLE;

        if (vhdx_open(&p, flags, &disk, &diag) == VHDX_OK) {
            struct vhdx_info info;

            vhdx_get_info(disk, &info);
            uint64_t sectors = info.virtual_size / info.logical_sector_size;
            uint64_t count = (sizeof buf) / info.logical_sector_size;

            if (count > sectors)
                count = sectors;
            vhdx_read(disk, 0, count, buf);
            vhdx_read(disk, sectors - 1, 1, buf);
            if (mode == 2) {
                memset(buf, 0x5a, 8192);
                vhdx_write(disk, sectors / 2, 8192 / info.logical_sector_size, buf);
                vhdx_flush(disk);
            }
            vhdx_close(disk, NULL);
        } else {
            char text[256];

            vhdx_describe(&diag, text, sizeof text);
        }
    }
    memfile_free(&m);
    return 0;
}

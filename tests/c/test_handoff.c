/*
 * test_handoff.c - the tool's parser of the firmware's hand-off record
 * (handoff_parse_record, tools/handoff.c), versions 1 and 2, on records built here from
 * the layout documented in platform/handoff_format.h and sealed with a bitwise CRC-32C
 * of this file's own (not the core's table).
 *
 * - Good records: version 1 (no parents) and version 2 with two parents: every field
 *   read back as written, '\' separators turned into '/'.
 * - Hostile records, each refused with its reason: a parent count over the limit,
 *   entries past the end of the record, a parent path running past the end, bytes left
 *   over after the last entry, a size field that disagrees, a parent path over 512
 *   bytes, a NUL or '..' in a parent path, a version 1 record with parents, an unknown
 *   version, a bad checksum.
 * - Every truncation of a good version 2 record (its size field and CRC left as they
 *   were, and resealed to its new length): refused, never read past (each record is a
 *   heap block of its exact length, under AddressSanitizer).
 *
 * Usage: test_handoff
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handoff.h"
#include "check.h"


/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit. */
static uint32_t crc32c(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xffffffffu;

    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? crc >> 1 ^ 0x82f63b78u : crc >> 1;
    }
    return ~crc;
}

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, v & 0xffff);
    put16(p + 2, v >> 16);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* A record being built: bytes, length. */
struct record {
    uint8_t bytes[VHDX_HANDOFF_MAX_SIZE + 4096];
    size_t length;
};

static void fill_guid(uint8_t *p, uint8_t seed)
{
    for (int i = 0; i < 16; i++)
        p[i] = (uint8_t)(seed + i);
}

/* The fixed part and the child's path. */
static void start(struct record *r, unsigned version, const char *path)
{
    uint8_t *b = r->bytes;
    size_t length = strlen(path);

    memset(r, 0, sizeof *r);
    memcpy(b, VHDX_HANDOFF_MAGIC, 8);
    put16(b + VHDX_HANDOFF_OFF_VERSION, version);
    put32(b + VHDX_HANDOFF_OFF_FLAGS, VHDX_HANDOFF_CLOSED);
    put32(b + VHDX_HANDOFF_OFF_PARTITION, 1);
    fill_guid(b + VHDX_HANDOFF_OFF_PARTITION_ID, 0x10);
    put32(b + VHDX_HANDOFF_OFF_FAT_SERIAL, 0x5644580c);
    put32(b + VHDX_HANDOFF_OFF_SECTOR_SIZE, 512);
    put64(b + VHDX_HANDOFF_OFF_VIRTUAL_SIZE, 320u << 20);
    put32(b + VHDX_HANDOFF_OFF_BLOCK_SIZE, 1u << 20);
    fill_guid(b + VHDX_HANDOFF_OFF_DISK_ID, 0x40);
    fill_guid(b + VHDX_HANDOFF_OFF_FILE_WRITE, 0x50);
    fill_guid(b + VHDX_HANDOFF_OFF_DATA_WRITE, 0x60);
    put64(b + VHDX_HANDOFF_OFF_FILE_SIZE, 12345678);
    put16(b + VHDX_HANDOFF_OFF_PATH_LENGTH, (unsigned)length);
    memcpy(b + VHDX_HANDOFF_FIXED_SIZE, path, length);
    r->length = VHDX_HANDOFF_FIXED_SIZE + length;
}

/* One parent entry (`path_length` bytes of `path`, which may hold a NUL). */
static void add_parent(struct record *r, const char *path, size_t path_length, uint8_t seed)
{
    uint8_t *e = r->bytes + r->length;

    fill_guid(e + VHDX_HANDOFF_PARENT_FILE_WRITE, seed);
    fill_guid(e + VHDX_HANDOFF_PARENT_DATA_WRITE, seed + 0x20);
    fill_guid(e + VHDX_HANDOFF_PARENT_DISK_ID, seed + 0x40);
    put64(e + VHDX_HANDOFF_PARENT_FILE_SIZE, 1000000u + seed);
    put16(e + VHDX_HANDOFF_PARENT_PATH_LENGTH, (unsigned)path_length);
    memcpy(e + VHDX_HANDOFF_PARENT_FIXED_SIZE, path, path_length);
    r->length += VHDX_HANDOFF_PARENT_FIXED_SIZE + path_length;
    put16(r->bytes + VHDX_HANDOFF_OFF_PARENTS,
          r->bytes[VHDX_HANDOFF_OFF_PARENTS] + 1u);
}

/* The size field and the CRC for `length` bytes. */
static void seal(struct record *r, size_t length)
{
    put16(r->bytes + VHDX_HANDOFF_OFF_SIZE, (unsigned)length);
    put32(r->bytes + VHDX_HANDOFF_OFF_CRC, 0);
    put32(r->bytes + VHDX_HANDOFF_OFF_CRC, crc32c(r->bytes, length));
}

/* Parse the first `length` bytes, from a heap block of exactly that size. */
static int parse(const struct record *r, size_t length, struct handoff_disk *disk, char *why)
{
    uint8_t *copy = malloc(length ? length : 1);
    int rc;

    memcpy(copy, r->bytes, length);
    why[0] = 0;
    rc = handoff_parse_record(copy, length, disk, why);
    free(copy);
    return rc;
}

static struct handoff_disk disk;     /* 10 KiB: not on the stack */
static struct record record;

/* A hostile record: refused, with `reason` in the message. */
static void refused(const char *name, const char *reason)
{
    char why[HANDOFF_WHY_MAX];
    int rc = parse(&record, record.length, &disk, why);

    check(rc == -1 && strstr(why, reason), name, "exit %d, '%s' (wanted '%s')", rc, why,
          reason);
}

static void good_records(void)
{
    char why[HANDOFF_WHY_MAX];
    static const char *paths[] = { "\\vhd\\base.vhdx", "\\parent.vhdx" };
    static const char *want[] = { "/vhd/base.vhdx", "/parent.vhdx" };
    bool ok;
    int rc;

    start(&record, VHDX_HANDOFF_VERSION, "\\demo.vhdx");
    seal(&record, record.length);
    rc = parse(&record, record.length, &disk, why);
    check(rc == 0 && disk.parent_count == 0 && !strcmp(disk.path, "/demo.vhdx") &&
          disk.closed && disk.virtual_size == 320u << 20 && disk.partition == 1,
          "version_1_record_read", "exit %d (%s), %u parents, path '%s'", rc, why,
          disk.parent_count, disk.path);

    start(&record, VHDX_HANDOFF_VERSION_CHAIN, "\\demo.vhdx");
    add_parent(&record, paths[0], strlen(paths[0]), 0x80);
    add_parent(&record, paths[1], strlen(paths[1]), 0x90);
    seal(&record, record.length);
    rc = parse(&record, record.length, &disk, why);
    ok = rc == 0 && disk.parent_count == 2;
    for (unsigned i = 0; ok && i < 2; i++) {
        const struct handoff_parent *p = &disk.parents[i];
        uint8_t seed = (uint8_t)(0x80 + 0x10 * i), g[16];

        ok = !strcmp(p->path, want[i]) && p->file_size == 1000000u + seed;
        fill_guid(g, seed);
        ok = ok && !memcmp(p->file_write_guid.bytes, g, 16);
        fill_guid(g, seed + 0x20);
        ok = ok && !memcmp(p->data_write_guid.bytes, g, 16);
        fill_guid(g, seed + 0x40);
        ok = ok && !memcmp(p->disk_id.bytes, g, 16);
    }
    check(ok, "version_2_record_read_with_two_parents", "exit %d (%s), %u parents, "
          "first '%s'", rc, why, disk.parent_count, disk.parents[0].path);

    /* Every truncation: as it was (size field and CRC of the whole) and resealed. */
    struct record whole = record;
    unsigned accepted = 0;

    for (size_t n = 0; n < whole.length; n++) {
        record = whole;
        accepted += parse(&record, n, &disk, why) == 0;
        seal(&record, n);
        accepted += parse(&record, n, &disk, why) == 0;
    }
    record = whole;
    check(!accepted, "every_truncated_version_2_record_refused",
          "%u of %zu truncations accepted", accepted, 2 * whole.length);
}

static void hostile_records(void)
{
    char long_path[VHDX_HANDOFF_PATH_MAX + 2];

    start(&record, VHDX_HANDOFF_VERSION_CHAIN, "\\demo.vhdx");
    for (int i = 0; i <= VHDX_HANDOFF_MAX_PARENTS; i++)
        add_parent(&record, "\\p.vhdx", 7, (uint8_t)i);
    seal(&record, record.length);
    refused("parent_count_over_the_limit_refused", "17 parents in a version 2 record");

    start(&record, VHDX_HANDOFF_VERSION_CHAIN, "\\demo.vhdx");
    add_parent(&record, "\\p.vhdx", 7, 1);
    put16(record.bytes + VHDX_HANDOFF_OFF_PARENTS, 3);
    seal(&record, record.length);
    refused("parent_entries_past_the_end_refused", "parent 2 of 3 does not fit");

    start(&record, VHDX_HANDOFF_VERSION_CHAIN, "\\demo.vhdx");
    add_parent(&record, "\\p.vhdx", 7, 1);
    put16(record.bytes + record.length - 7 - VHDX_HANDOFF_PARENT_FIXED_SIZE +
          VHDX_HANDOFF_PARENT_PATH_LENGTH, 8);
    seal(&record, record.length);
    refused("parent_path_past_the_end_refused", "parent 1 of 1 does not fit");

    start(&record, VHDX_HANDOFF_VERSION_CHAIN, "\\demo.vhdx");
    add_parent(&record, "\\p.vhdx", 7, 1);
    record.length += 3;                 /* three bytes nobody accounts for */
    seal(&record, record.length);
    refused("bytes_after_the_last_parent_refused", "sizes do not add up");

    start(&record, VHDX_HANDOFF_VERSION_CHAIN, "\\demo.vhdx");
    add_parent(&record, "\\p.vhdx", 7, 1);
    seal(&record, record.length);
    put16(record.bytes + VHDX_HANDOFF_OFF_SIZE, (unsigned)record.length + 64);
    put32(record.bytes + VHDX_HANDOFF_OFF_CRC, 0);
    put32(record.bytes + VHDX_HANDOFF_OFF_CRC, crc32c(record.bytes, record.length));
    refused("size_field_disagreeing_refused", "sizes do not add up");

    memset(long_path, 'a', sizeof long_path);
    long_path[0] = '\\';
    start(&record, VHDX_HANDOFF_VERSION_CHAIN, "\\demo.vhdx");
    add_parent(&record, long_path, VHDX_HANDOFF_PATH_MAX + 1, 1);
    seal(&record, record.length);
    refused("parent_path_over_512_bytes_refused", "parent 1 of 1 does not fit");

    start(&record, VHDX_HANDOFF_VERSION_CHAIN, "\\demo.vhdx");
    add_parent(&record, "\\ok.vhdx", 8, 1);
    add_parent(&record, "\\p\0x.vhdx", 9, 2);
    seal(&record, record.length);
    refused("nul_in_a_parent_path_refused", "parent 2: the path holds a NUL byte");

    start(&record, VHDX_HANDOFF_VERSION_CHAIN, "\\demo.vhdx");
    add_parent(&record, "\\vhd\\..\\..\\p.vhdx", 17, 1);
    seal(&record, record.length);
    refused("dotdot_in_a_parent_path_refused", "parent 1: the path may not contain '..'");

    start(&record, VHDX_HANDOFF_VERSION_CHAIN, "\\demo.vhdx");
    add_parent(&record, "p.vhdx", 6, 1);
    seal(&record, record.length);
    refused("relative_parent_path_refused", "parent 1: the path must start with");

    start(&record, VHDX_HANDOFF_VERSION, "\\demo.vhdx");
    add_parent(&record, "\\p.vhdx", 7, 1);
    seal(&record, record.length);
    refused("version_1_record_with_parents_refused", "1 parents in a version 1 record");

    start(&record, 3, "\\demo.vhdx");
    seal(&record, record.length);
    refused("unknown_version_refused", "record version 3");

    start(&record, VHDX_HANDOFF_VERSION_CHAIN, "\\demo.vhdx");
    add_parent(&record, "\\p.vhdx", 7, 1);
    seal(&record, record.length);
    record.bytes[record.length - 1] ^= 1;      /* the last byte of the last parent path */
    refused("changed_parent_byte_fails_the_checksum", "bad checksum");
}

int main(void)
{
    good_records();
    hostile_records();
    return failures ? 1 : 0;
}

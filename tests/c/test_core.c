/*
 * test_core.c - unit tests of the core: CRC-32C vectors, BAT geometry, header choice,
 * block states, read coalescing and message formatting.
 *
 * Usage: test_core IMAGE
 * IMAGE is a dynamic 512-byte-sector VHDX made by qemu-img with 1 MiB blocks and at
 * least blocks 0..3 written (tests/unit.test makes it).  Expected values come from the
 * spec (digest tables), from brute-force models written here, or from that image.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "vhdx.h"
#include "check.h"

static int leaks;                   /* opens that left platform allocations behind */

/* ---- CRC-32C (digest section 11) ---------------------------------------------------- */

static void test_crc(void)
{
    uint8_t buf[32];
    uint32_t crc;

    check(vhdx_crc32c(0, "123456789", 9) == 0xE3069283u, "crc32c_check_value", "got %08x",
          vhdx_crc32c(0, "123456789", 9));
    memset(buf, 0, 32);
    check(vhdx_crc32c(0, buf, 32) == 0x8A9136AAu, "crc32c_32_zeros", "got %08x",
          vhdx_crc32c(0, buf, 32));
    memset(buf, 0xFF, 32);
    check(vhdx_crc32c(0, buf, 32) == 0x62A8AB43u, "crc32c_32_ones", "got %08x",
          vhdx_crc32c(0, buf, 32));
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    check(vhdx_crc32c(0, buf, 32) == 0x46DD794Eu, "crc32c_ascending", "got %08x",
          vhdx_crc32c(0, buf, 32));
    crc = vhdx_crc32c(vhdx_crc32c(0, buf, 13), buf + 13, 19);
    check(crc == 0x46DD794Eu, "crc32c_chained", "got %08x", crc);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    check(vhdx_crc32c(0, buf, 32) == 0x113FDB5Cu, "crc32c_descending", "got %08x",
          vhdx_crc32c(0, buf, 32));
}

/* ---- BAT geometry (digest sections 7, 8) --------------------------------------------- */

/* The digest's chunk-ratio table, rows LSS 512 and 4096, columns 1 MiB .. 256 MiB. */
static const uint32_t ratio_table[2][9] = {
    { 4096, 2048, 1024, 512, 256, 128, 64, 32, 16 },
    { 32768, 16384, 8192, 4096, 2048, 1024, 512, 256, 128 },
};

/*
 * Model of the interleave by construction: walk the BAT in order, emitting the
 * ChunkRatio payload entries of a chunk and then its bitmap entry, and record where each
 * one landed.  Independent of the core's closed-form index formulas.
 */
static bool model_interleave(uint32_t ratio, uint64_t blocks, char *why, size_t why_len)
{
    uint64_t position = 0, block = 0, chunk = 0;

    while (block < blocks) {
        for (uint32_t k = 0; k < ratio && block < blocks; k++, block++, position++) {
            if (vhdx_bat_payload_index(block, ratio) != position) {
                snprintf(why, why_len, "payload block %llu at %llu, core says %llu",
                         (unsigned long long)block, (unsigned long long)position,
                         (unsigned long long)vhdx_bat_payload_index(block, ratio));
                return false;
            }
        }
        if (block % ratio == 0 || block == blocks) {
            if (block % ratio == 0 && vhdx_bat_bitmap_index(chunk, ratio) != position) {
                snprintf(why, why_len, "bitmap %llu at %llu", (unsigned long long)chunk,
                         (unsigned long long)position);
                return false;
            }
            position++;
            chunk++;
        }
    }
    return true;
}

static void test_bat_geometry(void)
{
    static const uint32_t sectors[2] = { 512, 4096 };
    char name[96], why[160];

    for (int s = 0; s < 2; s++) {
        for (int b = 0; b < 9; b++) {
            uint32_t block_size = (1u << 20) << b;
            uint32_t ratio = vhdx_chunk_ratio(block_size, sectors[s]);
            /* Cover the first chunk, a chunk boundary and a partial last chunk. */
            uint64_t blocks = 2ull * ratio + 3;
            bool ok;

            snprintf(name, sizeof name, "chunk_ratio_lss%u_bs%uM", sectors[s], block_size >> 20);
            check(ratio == ratio_table[s][b], name, "got %u, digest table says %u", ratio,
                  ratio_table[s][b]);
            snprintf(name, sizeof name, "bat_interleave_lss%u_bs%uM", sectors[s], block_size >> 20);
            why[0] = 0;
            ok = model_interleave(ratio, blocks, why, sizeof why);
            check(ok, name, "%s", why);

            /* Entry counts: last payload entry + 1 (dynamic); last bitmap entry + 1
             * (differencing) - for sizes around chunk boundaries and not block multiples. */
            snprintf(name, sizeof name, "bat_entries_lss%u_bs%uM", sectors[s], block_size >> 20);
            ok = true;
            for (uint64_t pb = 1; ok && pb <= 2ull * ratio + 1; pb += (pb < 3 ? 1 : ratio - 1)) {
                for (int partial = 0; ok && partial < 2; partial++) {
                    uint64_t vsize = pb * block_size - (partial ? sectors[s] : 0);
                    uint64_t dyn = vhdx_bat_entry_count(vsize, block_size, sectors[s], false);
                    uint64_t diff = vhdx_bat_entry_count(vsize, block_size, sectors[s], true);
                    uint64_t want_dyn = vhdx_bat_payload_index(pb - 1, ratio) + 1;
                    uint64_t want_diff = vhdx_bat_bitmap_index((pb - 1) / ratio, ratio) + 1;

                    ok = dyn == want_dyn && diff == want_diff;
                    snprintf(why, sizeof why, "%llu blocks%s: dynamic %llu (want %llu), "
                             "differencing %llu (want %llu)", (unsigned long long)pb,
                             partial ? " (partial)" : "", (unsigned long long)dyn,
                             (unsigned long long)want_dyn, (unsigned long long)diff,
                             (unsigned long long)want_diff);
                }
            }
            check(ok, name, "%s", why);
        }
    }
    /* The digest's worked example (section 8.2). */
    check(vhdx_bat_entry_count(128ull << 30, 32u << 20, 512, false) == 4127 &&
          vhdx_bat_entry_count(128ull << 30, 32u << 20, 512, true) == 4128,
          "bat_entries_digest_example", "128 GiB / 32 MiB should give 4127 and 4128");
}

/* ---- Headers (spec 2.2.2) ------------------------------------------------------------ */

#define H1 (64u * 1024)
#define H2 (128u * 1024)

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Re-seal a header after editing it (the CRC itself is checked by the vectors above). */
static void seal_header(uint8_t *h)
{
    put32(h + 4, 0);
    put32(h + 4, vhdx_crc32c(0, h, 4096));
}

static int open_mem(struct mem_file *m, struct vhdx_disk **disk, struct vhdx_diag *diag)
{
    struct vhdx_platform p;
    int rc;

    mem_file_platform(m, &p);
    m->quiet = true;
    rc = vhdx_open(&p, 0, disk, diag);
    if (rc && m->alloc.live)
        leaks++;
    return rc;
}

static void close_mem(struct mem_file *m, struct vhdx_disk *disk)
{
    vhdx_close(disk, NULL);
    if (m->alloc.live)
        leaks++;
}

/* Edit the header section (the first 1 MiB) of a file in place. */
static void edit_header_section(struct mem_file *m, void (*edit)(uint8_t *file))
{
    static uint8_t section[1 << 20];

    mem_file_peek(m, 0, section, sizeof section);
    edit(section);
    mem_file_poke(m, 0, section, sizeof section);
}

static void expect_header(const struct mem_file *base, const char *name,
                          void (*edit)(uint8_t *file), int want_rc, unsigned want_slot,
                          bool want_warning)
{
    struct mem_file m;
    struct mem_image before;
    struct vhdx_disk *disk;
    struct vhdx_diag diag;
    struct vhdx_info info;
    int rc;

    mem_file_clone(&m, base);
    edit_header_section(&m, edit);
    mem_snapshot(&m, &before);
    rc = open_mem(&m, &disk, &diag);
    if (rc != want_rc) {
        char text[256];

        vhdx_describe(&diag, text, sizeof text);
        check(false, name, "open returned %d (%s), expected %d", rc, text, want_rc);
    } else if (rc == VHDX_OK) {
        vhdx_get_info(disk, &info);
        check(info.header_slot == want_slot && (m.warnings > 0) == want_warning, name,
              "slot %u (want %u), warnings %llu", info.header_slot, want_slot,
              (unsigned long long)m.warnings);
        close_mem(&m, disk);
    } else {
        check(true, name, "");
    }
    if (m.count.writes || m.count.flushes || !mem_image_same(&m.image, &before, NULL)) {
        char wrote[96];

        snprintf(wrote, sizeof wrote, "%s_no_write", name);
        check(false, wrote, "%llu writes, %llu flushes on a read-only open",
              (unsigned long long)m.count.writes, (unsigned long long)m.count.flushes);
    }
    mem_image_release(&before);
    mem_file_free(&m);
}

static void edit_none(uint8_t *f) { (void)f; }

static void edit_h1_newer(uint8_t *f)
{
    put64(f + H1 + 8, get64(f + H2 + 8) + 5);
    seal_header(f + H1);
    put64(f + H2 + 8, get64(f + H1 + 8) - 3);
    seal_header(f + H2);
}

static void edit_h2_newer(uint8_t *f)
{
    put64(f + H2 + 8, get64(f + H1 + 8) + 1);
    seal_header(f + H2);
}

static void edit_equal_identical(uint8_t *f)
{
    memcpy(f + H1, f + H2, 4096);
}

static void edit_equal_different(uint8_t *f)
{
    memcpy(f + H1, f + H2, 4096);
    f[H1 + 16] ^= 0xFF;             /* FileWriteGuid differs */
    seal_header(f + H1);
}

static void edit_newer_torn(uint8_t *f)
{
    edit_h2_newer(f);
    f[H2 + 1000] ^= 0x01;           /* reserved byte: CRC no longer matches */
}

static void edit_older_bad_signature(uint8_t *f)
{
    edit_h2_newer(f);
    f[H1] = 'X';
}

static void edit_both_bad(uint8_t *f)
{
    f[H1 + 8] ^= 1;
    f[H2] = 'X';
}

static void edit_version_2(uint8_t *f)
{
    edit_h2_newer(f);
    f[H2 + 66] = 2;
    seal_header(f + H2);
}

static void edit_sequence_max(uint8_t *f)
{
    put64(f + H2 + 8, UINT64_MAX);
    seal_header(f + H2);
}

static void test_headers(const struct mem_file *base)
{
    expect_header(base, "header_newer_slot_1", edit_h1_newer, VHDX_OK, 1, false);
    expect_header(base, "header_newer_slot_2", edit_h2_newer, VHDX_OK, 2, false);
    expect_header(base, "header_equal_identical_uses_1", edit_equal_identical, VHDX_OK, 1, false);
    expect_header(base, "header_equal_different_refused", edit_equal_different,
                  VHDX_E_HEADERS_CONFLICT, 0, false);
    expect_header(base, "header_torn_current_falls_back", edit_newer_torn, VHDX_OK, 1, true);
    expect_header(base, "header_bad_signature_other_used", edit_older_bad_signature, VHDX_OK, 2,
                  true);
    expect_header(base, "header_both_invalid_refused", edit_both_bad, VHDX_E_NO_VALID_HEADER, 0,
                  false);
    expect_header(base, "header_version_2_refused", edit_version_2, VHDX_E_HEADER_VERSION, 0,
                  false);
    expect_header(base, "header_sequence_max_readable", edit_sequence_max, VHDX_OK, 2, false);
    (void)edit_none;
}

/* ---- Block states (spec 2.5.1.1) ------------------------------------------------------ */

static void set_entry(struct mem_file *m, uint64_t bat_offset, uint64_t index, uint64_t value)
{
    uint8_t raw[8];

    put64(raw, value);
    mem_file_poke(m, bat_offset + 8 * index, raw, sizeof raw);
}

static void test_block_states(const struct mem_file *base)
{
    static const struct {
        const char *name;
        unsigned state;
        int want_rc;                /* open result */
        bool reads_zero;
    } cases[] = {
        { "state_not_present_reads_zero", 0, VHDX_OK, true },
        { "state_undefined_stale_offset_reads_zero", 1, VHDX_OK, true },
        { "state_zero_reads_zero", 2, VHDX_OK, true },
        { "state_unmapped_stale_offset_reads_zero", 3, VHDX_OK, true },
        { "state_4_reserved_refused", 4, VHDX_E_BAT_STATE, false },
        { "state_5_draft_unmapped_reads_zero", 5, VHDX_OK, true },
        { "state_fully_present_reads_data", 6, VHDX_OK, false },
        { "state_partially_present_refused_in_dynamic", 7, VHDX_E_BAT_STATE, false },
    };
    struct mem_file m;
    struct vhdx_disk *disk;
    struct vhdx_diag diag;
    struct vhdx_info info;
    uint8_t *expect = malloc(1 << 20), *got = malloc(1 << 20), raw[8];
    uint64_t entry;

    mem_file_clone(&m, base);
    if (open_mem(&m, &disk, &diag)) {
        check(false, "block_states_setup", "base image does not open");
        return;
    }
    vhdx_get_info(disk, &info);
    vhdx_read(disk, 0, 2048, expect);   /* block 0 as qemu wrote it */
    close_mem(&m, disk);
    mem_file_peek(&m, info.bat_offset, raw, sizeof raw);
    entry = get64(raw);
    mem_file_free(&m);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc;

        mem_file_clone(&m, base);
        /* Keep block 0's file offset in the entry: a stale pointer for the zero states. */
        set_entry(&m, info.bat_offset, 0, (entry & ~7ull) | cases[i].state);
        rc = open_mem(&m, &disk, &diag);
        if (rc != cases[i].want_rc) {
            check(false, cases[i].name, "open returned %d, expected %d", rc, cases[i].want_rc);
        } else if (rc == VHDX_OK) {
            bool zero = true;

            rc = vhdx_read(disk, 0, 2048, got);
            for (int k = 0; k < (1 << 20) && zero; k++)
                zero = got[k] == 0;
            check(rc == 0 && (cases[i].reads_zero ? zero : !memcmp(got, expect, 1 << 20)),
                  cases[i].name, "read rc %d, zero %d", rc, zero);
            close_mem(&m, disk);
        } else {
            check(true, cases[i].name, "");
        }
        mem_file_free(&m);
    }
    free(expect);
    free(got);
}

/* ---- Read coalescing ----------------------------------------------------------------- */

static void test_coalescing(const struct mem_file *base)
{
    struct mem_file m;
    struct vhdx_disk *disk;
    struct vhdx_diag diag;
    uint8_t *buf = malloc(4 << 20);
    uint64_t before;

    mem_file_clone(&m, base);
    if (open_mem(&m, &disk, &diag)) {
        check(false, "coalesce_setup", "base image does not open");
        return;
    }
    before = m.count.reads;
    vhdx_read(disk, 0, 2048, buf);
    check(m.count.reads - before == 1, "read_1MiB_in_block_is_one_platform_read", "%llu reads",
          (unsigned long long)(m.count.reads - before));
    before = m.count.reads;
    vhdx_read(disk, 1, 1, buf);
    check(m.count.reads - before == 1, "read_one_sector_is_one_platform_read", "%llu reads",
          (unsigned long long)(m.count.reads - before));
    before = m.count.reads;
    vhdx_read(disk, 0, 8192, buf);
    /* qemu places blocks 0..3 back to back when written in order: one read or a few. */
    check(m.count.reads - before <= 4, "read_4MiB_over_4_blocks_at_most_4_reads", "%llu reads",
          (unsigned long long)(m.count.reads - before));
    check(vhdx_read(disk, 0, 0, NULL) == VHDX_OK, "read_zero_sectors_ok", "");
    check(vhdx_read(disk, UINT64_MAX, 2, buf) == VHDX_E_RANGE, "read_overflowing_range_refused",
          "");
    close_mem(&m, disk);
    mem_file_free(&m);
    free(buf);
}

/* ---- Messages -------------------------------------------------------------------------- */

static void test_messages(void)
{
    struct vhdx_diag d = { .code = VHDX_E_BAT_PAST_EOF, .a = 17, .b = 0x40000000 };
    char text[128], small[8];
    struct vhdx_guid g = { { 0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
                             0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08 } };
    char gt[39];

    vhdx_describe(&d, text, sizeof text);
    check(!strcmp(text, "BAT entry 17 points past end of file (offset 1073741824)"),
          "message_bat_past_eof", "got '%s'", text);
    vhdx_describe(&d, small, sizeof small);
    check(strlen(small) == 7, "message_truncates_safely", "got '%s'", small);
    for (int code = 1; code < VHDX_ERROR_COUNT; code++) {
        if (!strcmp(vhdx_error_template((enum vhdx_error)code), "unknown error")) {
            check(false, "every_error_has_a_message", "code %d", code);
            return;
        }
    }
    check(true, "every_error_has_a_message", "");
    /* The BAT region GUID's text form is in the digest (2DC27766-F623-...). */
    vhdx_guid_format(&g, gt);
    check(!strcmp(gt, "{2dc27766-f623-4200-9d64-115e9bfd4a08}"), "guid_text_form", "got %s", gt);
}

int main(int argc, char **argv)
{
    struct mem_file base;

    if (argc != 2) {
        fprintf(stderr, "usage: test_core IMAGE\n");
        return 2;
    }
    if (mem_file_load(&base, argv[1])) {
        fprintf(stderr, "cannot read %s\n", argv[1]);
        return 2;
    }
    test_crc();
    test_bat_geometry();
    test_headers(&base);
    test_block_states(&base);
    test_coalescing(&base);
    test_messages();
    check(leaks == 0, "no_allocation_survives_a_close_or_a_failed_open",
          "%d opens or closes left platform allocations behind", leaks);
    mem_file_free(&base);
    return failures ? 1 : 0;
}

/*
 * test_merge.c - vhdx_merge, and a power cut at every write it makes.
 *
 * A 16 MiB parent with data, and a differencing child of it (vhdx_create) with full
 * blocks, partial blocks over the parent's data, and zeroed ranges.  The chain's view V
 * is read first.  Then:
 *   - a merge runs to the end: the parent alone reads V, the child through it too, and
 *     both files check clean;
 *   - for every write of the merge, in the child's file and then in the parent's, a
 *     merge is cut there (the write fails and the device stops; what was not flushed is
 *     lost, and with a torn variant half the write reaches the file): the chain must still
 *     open, read-only and then writable (replaying the logs), and read V.
 * Files are in memory (platform/mem.c); the child finds its parent by name.
 *
 * Usage: test_merge
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "vhdx.h"

#define MIB (1u << 20)
#define SIZE (16u * MIB)
#define SECTOR 512u

static int failures;

static void result(bool ok, const char *name, const char *why)
{
    printf(ok ? "PASS %s\n" : "FAIL %s: %s\n", name, why);
    failures += !ok;
}

static void pattern(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed * 37 + i * 13 + (i >> 9));
}

static int open_chain(struct mem_file *child, unsigned flags, struct vhdx_disk **disk)
{
    struct vhdx_platform p;
    struct vhdx_diag diag;
    int rc;

    mem_file_platform(child, &p);
    rc = vhdx_open(&p, flags, disk, &diag);
    if (rc && getenv("TEST_MERGE_DEBUG")) {
        char text[300];

        vhdx_describe(&diag, text, sizeof text);
        fprintf(stderr, "open: %s\n", text);
    }
    return rc;
}

static void make_files(struct mem_file *parent, struct mem_file *child)
{
    struct vhdx_create_options o;
    struct vhdx_locator_entry locator[2];
    struct vhdx_platform p;
    struct vhdx_diag diag;
    struct vhdx_disk *disk;
    struct vhdx_info info;
    uint8_t *buf = malloc(3 * MIB);
    char linkage[39];

    mem_file_init(parent);
    parent->quiet = true;
    memset(&o, 0, sizeof o);
    o.virtual_size = SIZE;
    o.block_size = MIB;
    mem_file_platform(parent, &p);
    vhdx_create(&p, &o, &diag);
    vhdx_open(&p, VHDX_OPEN_WRITABLE, &disk, &diag);
    pattern(buf, 3 * MIB, 1);
    vhdx_write(disk, 0, 3 * MIB / SECTOR, buf);                 /* blocks 0-2 */
    vhdx_write(disk, 8 * MIB / SECTOR, MIB / SECTOR, buf);      /* block 8 */
    vhdx_get_info(disk, &info);
    vhdx_close(disk, NULL);
    vhdx_guid_format(&info.data_write_guid, linkage);

    mem_file_init(child);
    child->quiet = true;
    /* Each file its own GUIDs (a fresh mem_file's sequence is always the same). */
    child->random_state ^= 0x5DEECE66Dull;
    locator[0] = (struct vhdx_locator_entry){ "parent_linkage", linkage };
    locator[1] = (struct vhdx_locator_entry){ "relative_path", ".\\parent.vhdx" };
    o.locator = locator;
    o.locator_count = 2;
    o.block_size = MIB;
    mem_file_platform(child, &p);
    vhdx_create(&p, &o, &diag);
    mem_file_add_sibling(child, "parent.vhdx", parent);
    if (open_chain(child, VHDX_OPEN_WRITABLE, &disk)) {
        printf("FAIL merge_setup: the child does not open: %s\n", child->last_problem);
        exit(1);
    }
    pattern(buf, 3 * MIB, 2);
    vhdx_write(disk, 1 * MIB / SECTOR + 3, 40, buf);           /* partial, over data */
    vhdx_write(disk, 5 * MIB / SECTOR, MIB / SECTOR, buf);      /* a whole new block */
    vhdx_write(disk, 9 * MIB / SECTOR - 8, 16, buf);            /* partial, two blocks */
    vhdx_write_zeroes(disk, 2 * MIB / SECTOR, MIB / SECTOR);    /* a whole block zeroed */
    vhdx_write_zeroes(disk, 8 * MIB / SECTOR + 100, 20);        /* part of one */
    vhdx_close(disk, NULL);
    free(buf);
}

/* Does the chain (or the parent alone) open, as asked, and read `view`? */
static const char *reads_view(struct mem_file *file, unsigned flags, const uint8_t *view,
                              uint8_t *got)
{
    struct vhdx_disk *disk;

    if (open_chain(file, flags, &disk))
        return "does not open";
    if (vhdx_read(disk, 0, SIZE / SECTOR, got)) {
        vhdx_close(disk, NULL);
        return "read failed";
    }
    if (vhdx_close(disk, NULL))
        return "close failed";
    return memcmp(got, view, SIZE) ? "reads other bytes" : NULL;
}

static void test_merge_completes(struct mem_file *parent, struct mem_file *child,
                                 const uint8_t *view, uint8_t *got)
{
    struct mem_file p, c;
    struct vhdx_disk *disk;
    const char *why = NULL;

    mem_file_clone(&p, parent);
    mem_file_clone(&c, child);
    mem_file_add_sibling(&c, "parent.vhdx", &p);
    if (open_chain(&c, VHDX_OPEN_WRITABLE | VHDX_OPEN_PARENT_WRITABLE, &disk))
        why = "the chain does not open with a writable parent";
    else if (vhdx_merge(disk, NULL, NULL) || vhdx_close(disk, NULL))
        why = "the merge failed";
    if (!why)
        why = reads_view(&p, 0, view, got);
    if (!why)
        why = reads_view(&c, 0, view, got);
    if (!why)
        why = reads_view(&p, VHDX_OPEN_CHECK, view, got);
    if (!why)
        why = reads_view(&c, VHDX_OPEN_CHECK, view, got);
    result(!why, "merge_parent_reads_as_the_child_did", why ? why : "");
    mem_file_free(&c);
    mem_file_free(&p);
}

/* Cut the merge at write `nth` of one file; NULL or why the chain is not whole after. */
static const char *cut_at(struct mem_file *parent, struct mem_file *child, bool in_child,
                          uint64_t nth, bool torn, const uint8_t *view, uint8_t *got,
                          bool *reached)
{
    struct mem_file p, c;
    struct mem_file *victim = in_child ? &c : &p;
    struct vhdx_disk *disk;
    const char *why = NULL;

    mem_file_clone(&p, parent);
    mem_file_clone(&c, child);
    mem_file_add_sibling(&c, "parent.vhdx", &p);
    mem_file_keep_durable(&p);
    mem_file_keep_durable(&c);
    if (open_chain(&c, VHDX_OPEN_WRITABLE | VHDX_OPEN_PARENT_WRITABLE, &disk)) {
        why = "the chain does not open";
        goto out;
    }
    victim->fault.write.nth = victim->count.writes + nth;
    victim->fault.torn_keep = torn ? 2048 : 0;
    victim->fault.stop_after_fault = true;
    vhdx_merge(disk, NULL, NULL);
    *reached = victim->count.injected != 0;
    vhdx_close(disk, NULL);
    /* The power is cut: what was not flushed is lost, on both files. */
    mem_file_lose_unflushed(&p);
    mem_file_lose_unflushed(&c);
    memset(&p.fault, 0, sizeof p.fault);
    memset(&c.fault, 0, sizeof c.fault);
    why = reads_view(&c, 0, view, got);
    if (!why)
        why = reads_view(&c, VHDX_OPEN_WRITABLE, view, got);
    if (!why)
        why = reads_view(&c, VHDX_OPEN_CHECK, view, got);
out:
    mem_file_free(&c);
    mem_file_free(&p);
    return why;
}

int main(void)
{
    struct mem_file parent, child;
    struct vhdx_disk *disk;
    uint8_t *view = malloc(SIZE), *got = malloc(SIZE);
    char why[200];

    make_files(&parent, &child);
    if (open_chain(&child, 0, &disk) || vhdx_read(disk, 0, SIZE / SECTOR, view)) {
        printf("FAIL merge_setup: the chain does not read\n");
        return 1;
    }
    vhdx_close(disk, NULL);
    test_merge_completes(&parent, &child, view, got);
    for (int side = 0; side < 2; side++) {
        for (int torn = 0; torn < 2; torn++) {
            unsigned cuts = 0;
            const char *bad = NULL;
            bool reached = true;

            for (uint64_t n = 1; reached && !bad && n < 2000; n++) {
                bad = cut_at(&parent, &child, side == 0, n, torn, view, got, &reached);
                cuts += reached;
                if (bad)
                    snprintf(why, sizeof why, "cut at write %llu: %s", (unsigned long long)n,
                             bad);
            }
            snprintf(why + (bad ? strlen(why) : 0), sizeof why - (bad ? strlen(why) : 0),
                     "%s%u cut points", bad ? "; " : "", cuts);
            printf("%s merge_cut_at_every_write_of_the_%s%s: %s\n", bad ? "FAIL" : "PASS",
                   side == 0 ? "child" : "parent", torn ? "_torn" : "", why);
            failures += bad != NULL;
        }
    }
    mem_file_free(&child);
    mem_file_free(&parent);
    free(view);
    free(got);
    return failures ? 1 : 0;
}

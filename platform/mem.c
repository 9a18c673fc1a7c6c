/*
 * mem.c - the VHDX platform contract on a sparse in-memory file (see mem.h).
 *
 * Contents: a radix tree of MEM_TREE_LEVELS levels of 512-way nodes above 4 KiB pages,
 * indexed by page number (45 bits: offsets below 2^57).  A missing node or page is a
 * hole.  Every node and page carries a reference count; a tree is shared by the files
 * and snapshots that point at it, and writing goes down the path copying what is shared
 * (copy-on-write), so a snapshot or a clone is one reference.
 *
 * The allocation tracker puts a small header in front of each block the core gets, to
 * know its size at release and to catch a pointer that was not ours.
 */
#include "mem.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#if defined(__unix__)
#include <unistd.h>           /* lseek SEEK_DATA/SEEK_HOLE: optional, to skip holes */
#endif

#define FANOUT_BITS     9
#define FANOUT          (1u << FANOUT_BITS)
#define MEM_TREE_LEVELS 5       /* nodes above the pages: 5 x 9 = 45 bits of page number */
#define PAGE_SHIFT      12

/* Nodes and pages start with their reference count, so either can be shared blindly. */
struct mem_ref {
    uint32_t refs;
};

struct mem_node {
    uint32_t refs;
    void *slot[FANOUT];         /* struct mem_node, or struct mem_page at the last level */
};

struct mem_page {
    uint32_t refs;
    uint8_t bytes[MEM_PAGE_SIZE];
};

static void out_of_host_memory(void)
{
    /* The tests' own machinery failing says nothing about the core: stop loudly. */
    fputs("mem platform: out of host memory\n", stderr);
    abort();
}

static void *host_alloc(size_t size)
{
    void *p = malloc(size);

    if (!p)
        out_of_host_memory();
    return p;
}

/* ---- The page tree ----------------------------------------------------------------- */

static unsigned slot_index(uint64_t page, int level)
{
    return (unsigned)(page >> (FANOUT_BITS * (MEM_TREE_LEVELS - 1 - level))) & (FANOUT - 1);
}

/* Pages under one slot of a node at `level` (level MEM_TREE_LEVELS - 1 holds pages). */
static uint64_t pages_per_slot(int level)
{
    return (uint64_t)1 << (FANOUT_BITS * (MEM_TREE_LEVELS - 1 - level));
}

static void ref_take(void *p)
{
    if (p)
        ((struct mem_ref *)p)->refs++;
}

/* Drop one reference to the subtree rooted at `p` (a node at `level`, or a page when
 * level == MEM_TREE_LEVELS). */
static void ref_drop(void *p, int level)
{
    struct mem_node *node = p;

    if (!p || --((struct mem_ref *)p)->refs)
        return;
    if (level < MEM_TREE_LEVELS) {
        for (unsigned i = 0; i < FANOUT; i++)
            ref_drop(node->slot[i], level + 1);
    }
    free(p);
}

static struct mem_node *node_new(void)
{
    struct mem_node *n = host_alloc(sizeof *n);

    n->refs = 1;
    memset(n->slot, 0, sizeof n->slot);
    return n;
}

/* A private copy of a shared node: the children gain a sharer. */
static struct mem_node *node_unshare(struct mem_node *n)
{
    struct mem_node *copy = host_alloc(sizeof *copy);

    copy->refs = 1;
    memcpy(copy->slot, n->slot, sizeof copy->slot);
    for (unsigned i = 0; i < FANOUT; i++)
        ref_take(copy->slot[i]);
    n->refs--;
    return copy;
}

/* The byte a hole holds at file offset `offset`. */
static uint8_t hole_byte(const struct mem_image *img, uint64_t offset)
{
    return offset < img->zero_below ? 0 : img->fill;
}

/* Does a hole read as zeros over [offset, offset + length)? */
static bool hole_is_zero(const struct mem_image *img, uint64_t offset, uint64_t length)
{
    return img->fill == 0 || offset + length <= img->zero_below;
}

static void hole_bytes(const struct mem_image *img, uint64_t offset, uint8_t *out, size_t n)
{
    if (hole_is_zero(img, offset, n)) {
        memset(out, 0, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = hole_byte(img, offset + i);
}

static const struct mem_page *page_find(const struct mem_image *img, uint64_t page)
{
    const struct mem_node *n = img->root;

    for (int level = 0; n && level < MEM_TREE_LEVELS - 1; level++)
        n = n->slot[slot_index(page, level)];
    return n ? n->slot[slot_index(page, MEM_TREE_LEVELS - 1)] : NULL;
}

/* A private, writable page `page`, made from the hole or the shared page it replaces. */
static uint8_t *page_for_write(struct mem_image *img, uint64_t page)
{
    void **slot = (void **)&img->root;
    struct mem_page *p;

    for (int level = 0; level < MEM_TREE_LEVELS; level++) {
        struct mem_node *n = *slot;

        if (!n)
            *slot = n = node_new();
        else if (n->refs > 1)
            *slot = n = node_unshare(n);
        slot = &n->slot[slot_index(page, level)];
    }
    p = *slot;
    if (p && p->refs == 1)
        return p->bytes;
    *slot = host_alloc(sizeof *p);
    ((struct mem_page *)*slot)->refs = 1;
    if (p) {
        memcpy(((struct mem_page *)*slot)->bytes, p->bytes, MEM_PAGE_SIZE);
        p->refs--;
    } else {
        hole_bytes(img, page << PAGE_SHIFT, ((struct mem_page *)*slot)->bytes, MEM_PAGE_SIZE);
    }
    return ((struct mem_page *)*slot)->bytes;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    /* Each byte equals the next and the first is zero (memcmp is the fast loop here). */
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static void image_read(const struct mem_image *img, uint64_t offset, uint8_t *out, size_t n)
{
    while (n) {
        size_t in = (size_t)(offset & (MEM_PAGE_SIZE - 1));
        size_t piece = MEM_PAGE_SIZE - in < n ? MEM_PAGE_SIZE - in : n;
        const struct mem_page *p = page_find(img, offset >> PAGE_SHIFT);

        if (p)
            memcpy(out, p->bytes + in, piece);
        else
            hole_bytes(img, offset, out, piece);
        offset += piece;
        out += piece;
        n -= piece;
    }
}

/* Store bytes; zeros written into a hole that reads as zeros leave it a hole. */
static void image_write(struct mem_image *img, uint64_t offset, const uint8_t *data, size_t n)
{
    while (n) {
        size_t in = (size_t)(offset & (MEM_PAGE_SIZE - 1));
        size_t piece = MEM_PAGE_SIZE - in < n ? MEM_PAGE_SIZE - in : n;
        uint64_t page = offset >> PAGE_SHIFT;

        if (page_find(img, page) || !hole_is_zero(img, offset, piece) || !all_zero(data, piece))
            memcpy(page_for_write(img, page) + in, data, piece);
        offset += piece;
        data += piece;
        n -= piece;
    }
}

/*
 * Drop the pages at and above `keep_pages` from the subtree `p` at `level`, whose first
 * page is `first`; returns what the slot should now hold.
 */
static void *prune(void *p, int level, uint64_t first, uint64_t keep_pages)
{
    struct mem_node *n = p;
    uint64_t span = level < MEM_TREE_LEVELS ? pages_per_slot(level) * FANOUT : 1;

    if (!p || first + span <= keep_pages)
        return p;
    if (first >= keep_pages) {
        ref_drop(p, level);
        return NULL;
    }
    if (n->refs > 1)
        n = node_unshare(n);
    for (unsigned i = 0; i < FANOUT; i++)
        n->slot[i] = prune(n->slot[i], level + 1, first + i * pages_per_slot(level), keep_pages);
    return n;
}

static void image_resize(struct mem_image *img, uint64_t size)
{
    if (size < img->size) {
        uint64_t keep_pages = (size + MEM_PAGE_SIZE - 1) >> PAGE_SHIFT;
        size_t in = (size_t)(size & (MEM_PAGE_SIZE - 1));

        img->root = prune(img->root, 0, 0, keep_pages);
        /* What a later grow adds must not show the bytes cut off here. */
        if (img->zero_below > size)
            img->zero_below = size;
        if (in && page_find(img, size >> PAGE_SHIFT)) {
            uint8_t *bytes = page_for_write(img, size >> PAGE_SHIFT);

            hole_bytes(img, size, bytes + in, MEM_PAGE_SIZE - in);
        }
    }
    img->size = size;
}

static void image_share(struct mem_image *dst, const struct mem_image *src)
{
    *dst = *src;
    ref_take(dst->root);
}

void mem_image_release(struct mem_image *image)
{
    ref_drop(image->root, 0);
    image->root = NULL;
    image->size = 0;
}

/* Compare subtrees `pa` (of a) and `pb` (of b) at `level` from page `first`. */
static bool subtree_same(const struct mem_image *a, const void *pa, const struct mem_image *b,
                         const void *pb, int level, uint64_t first, uint64_t *where)
{
    uint64_t start = first << PAGE_SHIFT;

    if (start >= a->size)
        return true;
    if (pa == pb && (pa || (a->fill == b->fill && (a->fill == 0 || a->zero_below == b->zero_below))))
        return true;
    if (level == MEM_TREE_LEVELS) {
        uint8_t ba[MEM_PAGE_SIZE], bb[MEM_PAGE_SIZE];
        size_t n = a->size - start < MEM_PAGE_SIZE ? (size_t)(a->size - start) : MEM_PAGE_SIZE;

        if (pa)
            memcpy(ba, ((const struct mem_page *)pa)->bytes, n);
        else
            hole_bytes(a, start, ba, n);
        if (pb)
            memcpy(bb, ((const struct mem_page *)pb)->bytes, n);
        else
            hole_bytes(b, start, bb, n);
        for (size_t i = 0; i < n; i++) {
            if (ba[i] != bb[i]) {
                if (where)
                    *where = start + i;
                return false;
            }
        }
        return true;
    }
    for (unsigned i = 0; i < FANOUT; i++) {
        const void *ca = pa ? ((const struct mem_node *)pa)->slot[i] : NULL;
        const void *cb = pb ? ((const struct mem_node *)pb)->slot[i] : NULL;

        if (!subtree_same(a, ca, b, cb, level + 1, first + i * pages_per_slot(level), where))
            return false;
    }
    return true;
}

bool mem_image_same(const struct mem_image *a, const struct mem_image *b, uint64_t *where)
{
    if (a->size != b->size) {
        struct mem_image shorter = a->size < b->size ? *a : *b;

        /* Report the first difference inside the common part, else where one ends. */
        if (where)
            *where = shorter.size;
        if (a->size < b->size)
            subtree_same(a, a->root, b, b->root, 0, 0, where);
        else
            subtree_same(b, b->root, a, a->root, 0, 0, where);
        return false;
    }
    return subtree_same(a, a->root, b, b->root, 0, 0, where);
}

static uint64_t count_pages(const void *p, int level)
{
    uint64_t n = 0;

    if (!p)
        return 0;
    if (level == MEM_TREE_LEVELS)
        return 1;
    for (unsigned i = 0; i < FANOUT; i++)
        n += count_pages(((const struct mem_node *)p)->slot[i], level + 1);
    return n;
}

/* ---- Faults and counters ------------------------------------------------------------ */

static bool fault_hits(const struct mem_fault *f, uint64_t call)
{
    return f->nth && (call == f->nth || (f->persist && call > f->nth));
}

/* Does I/O call number `call` of a kind fail by injection?  Also arms the power cut. */
static bool injected(struct mem_file *m, const struct mem_fault *f, uint64_t call)
{
    bool hit = m->fault.stopped || fault_hits(f, call);

    if (hit) {
        m->count.injected++;
        if (m->fault.stop_after_fault)
            m->fault.stopped = true;
    }
    return hit;
}

static void report(struct mem_file *m, struct mem_event *e)
{
    if (m->hook)
        m->hook(m->hook_context, e);
}

static bool in_file(const struct mem_file *m, uint64_t offset, size_t length)
{
    return offset <= m->image.size && length <= m->image.size - offset;
}

/* ---- The callbacks ------------------------------------------------------------------- */

static int mem_read(void *context, uint64_t offset, void *buffer, size_t length)
{
    struct mem_file *m = context;
    struct mem_event e = { MEM_OP_READ, ++m->count.reads, offset, length, 0, NULL, VHDX_OK,
                           false };

    if (injected(m, &m->fault.read, e.call)) {
        e.result = VHDX_E_IO;
        e.injected = true;
    } else if (!in_file(m, offset, length)) {
        e.result = VHDX_E_IO;
    } else {
        image_read(&m->image, offset, buffer, length);
        m->count.bytes_read += length;
        e.done = length;
    }
    report(m, &e);
    return e.result;
}

static int mem_write(void *context, uint64_t offset, const void *buffer, size_t length)
{
    struct mem_file *m = context;
    struct mem_event e = { MEM_OP_WRITE, ++m->count.writes, offset, length, 0, buffer,
                           VHDX_OK, false };

    if (m->read_only) {
        e.result = VHDX_E_READ_ONLY;
    } else if (!in_file(m, offset, length)) {
        e.result = VHDX_E_IO;
    } else if (injected(m, &m->fault.write, e.call)) {
        /* Torn: the first sectors of the chosen write reached the media before it failed. */
        size_t keep = e.call == m->fault.write.nth ? m->fault.torn_keep : 0;

        keep = (keep < length ? keep : length) / 512 * 512;
        image_write(&m->image, offset, buffer, keep);
        m->count.bytes_written += keep;
        e.done = keep;
        e.result = VHDX_E_IO;
        e.injected = true;
    } else {
        image_write(&m->image, offset, buffer, length);
        m->count.bytes_written += length;
        e.done = length;
    }
    report(m, &e);
    return e.result;
}

/* Zeroing and discarding are writes of a pattern, so hooks and faults see them as such. */
static int write_pattern(void *context, uint64_t offset, uint64_t length, uint8_t value)
{
    static uint8_t pattern[64 * 1024];
    int rc = VHDX_OK;

    memset(pattern, value, sizeof pattern);
    while (!rc && length) {
        size_t piece = length < sizeof pattern ? (size_t)length : sizeof pattern;

        rc = mem_write(context, offset, pattern, piece);
        offset += piece;
        length -= piece;
    }
    return rc;
}

static int mem_zero(void *context, uint64_t offset, uint64_t length)
{
    return write_pattern(context, offset, length, 0);
}

/* Discarded bytes may read as anything (the contract): here as junk, so a core that
 * discards space something still points at is caught reading it. */
#define DISCARD_JUNK 0xD1

static int mem_discard(void *context, uint64_t offset, uint64_t length)
{
    return write_pattern(context, offset, length, DISCARD_JUNK);
}

static int mem_flush(void *context)
{
    struct mem_file *m = context;
    struct mem_event e = { MEM_OP_FLUSH, ++m->count.flushes, 0, 0, 0, NULL, VHDX_OK, false };

    if (injected(m, &m->fault.flush, e.call)) {
        e.result = VHDX_E_IO;
        e.injected = true;
    } else if (m->keep_durable) {
        mem_image_release(&m->durable);
        image_share(&m->durable, &m->image);
    }
    report(m, &e);
    return e.result;
}

static int mem_size(void *context, uint64_t *file_size)
{
    struct mem_file *m = context;

    m->count.sizes++;
    *file_size = m->image.size;
    return VHDX_OK;
}

static int mem_grow(void *context, uint64_t new_size)
{
    struct mem_file *m = context;
    struct mem_event e = { MEM_OP_GROW, ++m->count.grows, new_size, 0, 0, NULL, VHDX_OK,
                           false };

    if (m->read_only) {
        e.result = VHDX_E_READ_ONLY;
    } else if (injected(m, &m->fault.grow, e.call)) {
        e.result = VHDX_E_IO;
        e.injected = true;
    } else if (new_size <= m->image.size) {
        /* Nothing to do: grow never shrinks. */
    } else if ((m->fault.grow_limit && new_size > m->fault.grow_limit) ||
               new_size > MEM_MAX_FILE_SIZE) {
        e.result = VHDX_E_NO_SPACE;
    } else {
        image_resize(&m->image, new_size);
    }
    report(m, &e);
    return e.result;
}

/* Each block the core gets is preceded by this, aligned for anything; the live ones
 * form a list so a test that abandons an open can take them back. */
union mem_block {
    struct {
        uint64_t size;
        uint64_t magic;
        union mem_block *prev, *next;
    } h;
    max_align_t align;
};

#define BLOCK_MAGIC 0x6d656d626c6f636bull   /* "memblock" */
#define BLOCK_FREED 0x6672656564626c6bull

static void *mem_allocate(void *context, size_t size)
{
    struct mem_file *m = context;
    struct mem_allocations *a = &m->alloc;
    union mem_block *b;

    a->calls++;
    if (a->largest_request < size)
        a->largest_request = size;
    if (a->peak_requested < a->current + size)
        a->peak_requested = a->current + size;
    if (fault_hits(&m->fault.allocate, a->calls)) {
        m->count.injected++;
        a->refused++;
        return NULL;
    }
    if ((a->limit && (size > a->limit || a->current > a->limit - size)) ||
        size > SIZE_MAX - sizeof *b || !(b = malloc(sizeof *b + size))) {
        a->refused++;
        return NULL;
    }
    b->h.size = size;
    b->h.magic = BLOCK_MAGIC;
    b->h.prev = NULL;
    b->h.next = m->live_blocks;
    if (b->h.next)
        b->h.next->h.prev = b;
    m->live_blocks = b;
    a->current += size;
    a->live++;
    if (a->peak < a->current)
        a->peak = a->current;
    return b + 1;
}

static void mem_release(void *context, void *memory)
{
    struct mem_file *m = context;
    union mem_block *b = (union mem_block *)memory - 1;

    if (!memory)
        return;
    if (b->h.magic != BLOCK_MAGIC) {
        fprintf(stderr, "mem platform: release of %p, which allocate did not return "
                "(or was released already)\n", memory);
        abort();
    }
    b->h.magic = BLOCK_FREED;
    if (b->h.prev)
        b->h.prev->h.next = b->h.next;
    else
        m->live_blocks = b->h.next;
    if (b->h.next)
        b->h.next->h.prev = b->h.prev;
    m->alloc.current -= b->h.size;
    m->alloc.live--;
    free(b);
}

void mem_file_release_all(struct mem_file *file)
{
    while (file->live_blocks)
        mem_release(file, (union mem_block *)file->live_blocks + 1);
}

static void mem_log(void *context, enum vhdx_log_level level, const char *message)
{
    struct mem_file *m = context;

    switch (level) {
    case VHDX_LOG_ERROR: m->errors++; break;
    case VHDX_LOG_PROBLEM: m->problems++; break;
    case VHDX_LOG_WARNING: m->warnings++; break;
    default: m->infos++; break;
    }
    m->message_bytes += strlen(message) + 1;
    snprintf(m->last_message, sizeof m->last_message, "%s", message);
    if (level <= VHDX_LOG_PROBLEM)
        snprintf(m->last_problem, sizeof m->last_problem, "%s", message);
    if (!m->quiet && level <= VHDX_LOG_WARNING)
        fprintf(stderr, "  (core says: %s)\n", message);
}

static int mem_random(void *context, uint8_t bytes[16])
{
    struct mem_file *m = context;

    for (int i = 0; i < 16; i++) {
        m->random_state = m->random_state * 6364136223846793005ull + 1442695040888963407ull;
        bytes[i] = (uint8_t)(m->random_state >> 56);
    }
    return VHDX_OK;
}

void mem_file_add_sibling(struct mem_file *file, const char *name, struct mem_file *other)
{
    if (file->sibling_count < sizeof file->siblings / sizeof file->siblings[0]) {
        file->siblings[file->sibling_count].name = name;
        file->siblings[file->sibling_count++].file = other;
    }
}

static int mem_open_sibling(void *context, const char *path, bool writable,
                            struct vhdx_platform *sibling)
{
    struct mem_file *m = context;
    const char *last = path;

    for (const char *p = path; *p; p++) {
        if (*p == '\\' || *p == '/')
            last = p + 1;
    }
    for (unsigned i = 0; i < m->sibling_count; i++) {
        if (!strcasecmp(m->siblings[i].name, last)) {
            mem_file_platform(m->siblings[i].file, sibling);
            if (!writable)
                sibling->flags |= VHDX_PLATFORM_READ_ONLY;
            return VHDX_OK;
        }
    }
    return VHDX_E_PARENT_NOT_FOUND;
}

/* The test owns sibling files: nothing to release. */
static void mem_close(void *context)
{
    (void)context;
}

void mem_file_platform(struct mem_file *file, struct vhdx_platform *platform)
{
    memset(platform, 0, sizeof *platform);
    platform->context = file;
    platform->read = mem_read;
    platform->write = mem_write;
    platform->flush = mem_flush;
    platform->size = mem_size;
    platform->grow = mem_grow;
    platform->allocate = mem_allocate;
    platform->release = mem_release;
    platform->log = mem_log;
    platform->random = mem_random;
    platform->zero = mem_zero;
    platform->discard = mem_discard;
    platform->open_sibling = mem_open_sibling;
    platform->close = mem_close;
    platform->flags = (file->image.fill == 0 ? VHDX_PLATFORM_GROW_ZEROES : 0) |
                      (file->read_only ? VHDX_PLATFORM_READ_ONLY : 0);
}

/* ---- Files --------------------------------------------------------------------------- */

void mem_file_init(struct mem_file *file)
{
    memset(file, 0, sizeof *file);
    file->random_state = 0x853c49e6748fea9bull;
}

/* Copy [offset, end) of the host file in; all-zero pages stay holes. */
static bool load_range(struct mem_file *file, FILE *f, uint64_t offset, uint64_t end,
                       uint8_t *buffer, size_t chunk)
{
    if (offset > (uint64_t)LONG_MAX || fseek(f, (long)offset, SEEK_SET))
        return false;
    while (offset < end) {
        size_t want = end - offset < chunk ? (size_t)(end - offset) : chunk;

        if (fread(buffer, 1, want, f) != want)
            return false;
        image_write(&file->image, offset, buffer, want);
        offset += want;
    }
    return true;
}

int mem_file_load(struct mem_file *file, const char *path)
{
    enum { CHUNK = 1 << 20 };
    FILE *f;
    uint8_t *buffer;
    long size;
    bool ok;

    mem_file_init(file);
    f = fopen(path, "rb");
    if (!f)
        return errno;
    if (fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0) {
        fclose(f);
        return EIO;
    }
    buffer = host_alloc(CHUNK);
    image_resize(&file->image, (uint64_t)size);
#if defined(SEEK_DATA) && defined(SEEK_HOLE)
    /* Skip the host file's holes without reading them (a sparse 1 TiB image loads in
     * the time its data takes). */
    {
        int fd = fileno(f);
        off_t at = 0, data, hole;

        ok = true;
        while (ok && at < size && (data = lseek(fd, at, SEEK_DATA)) >= 0) {
            hole = lseek(fd, data, SEEK_HOLE);
            if (hole < 0)
                hole = size;
            ok = load_range(file, f, (uint64_t)data, (uint64_t)hole, buffer, CHUNK);
            at = hole;
        }
    }
#else
    ok = load_range(file, f, 0, (uint64_t)size, buffer, CHUNK);
#endif
    free(buffer);
    fclose(f);
    file->image.zero_below = file->image.size;
    if (!ok) {
        mem_file_free(file);
        return EIO;
    }
    return 0;
}

struct save_state {
    FILE *f;
    const struct mem_image *img;
    uint64_t end;               /* bytes written up to here */
    bool failed;
};

static void save_subtree(struct save_state *s, const void *p, int level, uint64_t first)
{
    uint64_t start = first << PAGE_SHIFT;
    uint64_t span = (level < MEM_TREE_LEVELS ? pages_per_slot(level) * FANOUT : 1) << PAGE_SHIFT;

    if (start >= s->img->size || s->failed)
        return;
    if (!p && hole_is_zero(s->img, start, span))
        return;                 /* stays a hole in the host file too */
    if (level < MEM_TREE_LEVELS) {
        for (unsigned i = 0; i < FANOUT; i++)
            save_subtree(s, p ? ((const struct mem_node *)p)->slot[i] : NULL, level + 1,
                         first + i * pages_per_slot(level));
    } else {
        uint8_t hole[MEM_PAGE_SIZE];
        size_t n = s->img->size - start < MEM_PAGE_SIZE ? (size_t)(s->img->size - start)
                                                        : MEM_PAGE_SIZE;
        const uint8_t *bytes = p ? ((const struct mem_page *)p)->bytes : hole;

        if (!p)
            hole_bytes(s->img, start, hole, n);
        if (start > (uint64_t)LONG_MAX || fseek(s->f, (long)start, SEEK_SET) ||
            fwrite(bytes, 1, n, s->f) != n)
            s->failed = true;
        s->end = start + n;
    }
}

int mem_file_save(const struct mem_file *file, const char *path)
{
    struct save_state s = { fopen(path, "wb"), &file->image, 0, false };
    int err;

    if (!s.f)
        return errno;
    save_subtree(&s, file->image.root, 0, 0);
    /* A trailing hole: one zero byte at the end gives the file its size. */
    if (!s.failed && s.end < file->image.size &&
        (file->image.size - 1 > (uint64_t)LONG_MAX ||
         fseek(s.f, (long)(file->image.size - 1), SEEK_SET) || fputc(0, s.f) == EOF))
        s.failed = true;
    err = s.failed ? (errno ? errno : EIO) : 0;
    if (fclose(s.f) && !err)
        err = errno ? errno : EIO;
    return err;
}

void mem_file_free(struct mem_file *file)
{
    mem_image_release(&file->image);
    mem_image_release(&file->durable);
}

void mem_file_clone(struct mem_file *copy, const struct mem_file *file)
{
    mem_file_init(copy);
    image_share(&copy->image, &file->image);
    copy->read_only = file->read_only;
    copy->quiet = file->quiet;
    copy->random_state = file->random_state;
}

void mem_file_reset_counters(struct mem_file *file)
{
    memset(&file->count, 0, sizeof file->count);
    file->alloc.peak = file->alloc.peak_requested = file->alloc.current;
    file->alloc.largest_request = 0;
    file->alloc.calls = file->alloc.refused = 0;
    file->errors = file->problems = file->warnings = file->infos = 0;
    file->message_bytes = 0;
}

void mem_file_grow_fill(struct mem_file *file, uint8_t fill)
{
    /* Holes that read as zeros so far keep doing so. */
    if (file->image.fill == 0)
        file->image.zero_below = file->image.size;
    file->image.fill = fill;
}

void mem_file_keep_durable(struct mem_file *file)
{
    mem_image_release(&file->durable);
    image_share(&file->durable, &file->image);
    file->keep_durable = true;
}

void mem_file_lose_unflushed(struct mem_file *file)
{
    if (file->keep_durable)
        mem_file_restore(file, &file->durable);
}

bool mem_file_peek(const struct mem_file *file, uint64_t offset, void *buffer, size_t length)
{
    if (!in_file(file, offset, length))
        return false;
    image_read(&file->image, offset, buffer, length);
    return true;
}

bool mem_file_poke(struct mem_file *file, uint64_t offset, const void *buffer, size_t length)
{
    if (offset > MEM_MAX_FILE_SIZE || length > MEM_MAX_FILE_SIZE - offset)
        return false;
    if (offset + length > file->image.size)
        image_resize(&file->image, offset + length);
    image_write(&file->image, offset, buffer, length);
    return true;
}

bool mem_file_resize(struct mem_file *file, uint64_t size)
{
    if (size > MEM_MAX_FILE_SIZE)
        return false;
    image_resize(&file->image, size);
    return true;
}

uint64_t mem_file_pages(const struct mem_file *file)
{
    return count_pages(file->image.root, 0);
}

void mem_snapshot(const struct mem_file *file, struct mem_image *snapshot)
{
    image_share(snapshot, &file->image);
}

void mem_file_restore(struct mem_file *file, const struct mem_image *snapshot)
{
    struct mem_image old = file->image;

    image_share(&file->image, snapshot);
    mem_image_release(&old);
}

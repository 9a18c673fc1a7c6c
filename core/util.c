/*
 * util.c - little-endian access, memory helpers, GUIDs, checked arithmetic, sorting
 * (see util.h).
 */
#include "util.h"

#include "format.h"

uint16_t get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

uint64_t get_le64(const uint8_t *p)
{
    return (uint64_t)get_le32(p) | ((uint64_t)get_le32(p + 4) << 32);
}

void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void put_le64(uint8_t *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

/*
 * Word-at-a-time where both pointers allow it: the read path copies replayed log
 * sectors and the write path zero-fills new blocks, so these are not cold.  The
 * may_alias type keeps the word access legal whatever type the buffer really has.
 */
typedef uint64_t __attribute__((may_alias)) word_t;

void mem_copy(void *dst, const void *src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;

    if ((((uintptr_t)d | (uintptr_t)s) & 7) == 0) {
        for (; n >= 8; n -= 8, d += 8, s += 8)
            *(word_t *)(void *)d = *(const word_t *)(const void *)s;
    }
    while (n--)
        *d++ = *s++;
}

void mem_zero(void *dst, size_t n)
{
    uint8_t *d = dst;

    while (n && ((uintptr_t)d & 7)) {
        *d++ = 0;
        n--;
    }
    for (; n >= 8; n -= 8, d += 8)
        *(word_t *)(void *)d = 0;
    while (n--)
        *d++ = 0;
}

bool mem_equal(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;

    while (n--) {
        if (*x++ != *y++)
            return false;
    }
    return true;
}

bool mem_is_zero(const void *p, size_t n)
{
    const uint8_t *x = p;

    while (n && ((uintptr_t)x & 7)) {
        if (*x++)
            return false;
        n--;
    }
    for (; n >= 8; n -= 8, x += 8) {
        if (*(const word_t *)(const void *)x)
            return false;
    }
    while (n--) {
        if (*x++)
            return false;
    }
    return true;
}

bool guid_equal(const struct vhdx_guid *a, const struct vhdx_guid *b)
{
    return mem_equal(a->bytes, b->bytes, sizeof a->bytes);
}

bool vhdx_guid_is_zero(const struct vhdx_guid *guid)
{
    return mem_is_zero(guid->bytes, sizeof guid->bytes);
}

void guid_read(struct vhdx_guid *g, const uint8_t *p)
{
    mem_copy(g->bytes, p, sizeof g->bytes);
}

/* Text form: Data1..Data3 are little-endian integers on disk, Data4 is bytes (spec 1.1). */
void vhdx_guid_format(const struct vhdx_guid *guid, char text[39])
{
    static const char hex[] = "0123456789abcdef";
    static const uint8_t order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
    size_t pos = 0;

    text[pos++] = '{';
    for (unsigned i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            text[pos++] = '-';
        uint8_t byte = guid->bytes[order[i]];
        text[pos++] = hex[byte >> 4];
        text[pos++] = hex[byte & 15];
    }
    text[pos++] = '}';
    text[pos] = '\0';
}

bool add_overflows(uint64_t a, uint64_t b, uint64_t *sum)
{
    *sum = a + b;
    return *sum < a;
}

/* Compare by subtraction: start + length may not be representable (FileOffsetMB near
 * 2^44 plus a block size wraps). */
bool range_fits(uint64_t start, uint64_t length, uint64_t limit)
{
    return start <= limit && length <= limit - start;
}

uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

/* Half-open intervals [start, start+len); an overflowing end counts as reaching 2^64. */
bool ranges_overlap(uint64_t a_start, uint64_t a_len, uint64_t b_start, uint64_t b_len)
{
    uint64_t a_end, b_end;

    if (a_len == 0 || b_len == 0)
        return false;
    if (add_overflows(a_start, a_len, &a_end))
        a_end = UINT64_MAX;
    if (add_overflows(b_start, b_len, &b_end))
        b_end = UINT64_MAX;
    return a_start < b_end && b_start < a_end;
}

uint64_t align_up_mib(uint64_t value)
{
    return (value + (MIB - 1)) & ~(uint64_t)(MIB - 1);
}

bool is_power_of_two(uint64_t v)
{
    return v && !(v & (v - 1));
}

unsigned log2_u64(uint64_t v)
{
    unsigned n = 0;

    while (v >>= 1)
        n++;
    return n;
}

static void swap_records(uint8_t *a, uint8_t *b, size_t size)
{
    while (size--) {
        uint8_t t = *a;

        *a++ = *b;
        *b++ = t;
    }
}

static void sift_down(uint8_t *base, uint64_t root, uint64_t n, size_t size,
                      bool (*before)(const void *a, const void *b))
{
    for (;;) {
        uint64_t child = 2 * root + 1;

        if (child >= n)
            return;
        if (child + 1 < n && before(base + child * size, base + (child + 1) * size))
            child++;
        if (!before(base + root * size, base + child * size))
            return;
        swap_records(base + root * size, base + child * size, size);
        root = child;
    }
}

void sort_records(void *records, uint64_t n, size_t size,
                  bool (*before)(const void *a, const void *b))
{
    uint8_t *base = records;

    for (uint64_t i = n / 2; i-- > 0;)
        sift_down(base, i, n, size, before);
    for (uint64_t end = n; end-- > 1;) {
        swap_records(base, base + end * size, size);
        sift_down(base, 0, end, size, before);
    }
}

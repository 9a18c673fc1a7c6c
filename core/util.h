/*
 * util.h - bytes, memory, GUIDs and checked arithmetic: what libc would give a hosted
 * program, for a core that has no libc.
 *
 * Every offset and length taken from the file goes through the checked helpers here
 * (trap T16: unchecked offset + length let hostile images wrap around).
 */
#ifndef VHDX_UTIL_H
#define VHDX_UTIL_H

#include "vhdx.h"

uint16_t get_le16(const uint8_t *p);
uint32_t get_le32(const uint8_t *p);
uint64_t get_le64(const uint8_t *p);
void put_le16(uint8_t *p, uint16_t v);
void put_le32(uint8_t *p, uint32_t v);
void put_le64(uint8_t *p, uint64_t v);

void mem_copy(void *dst, const void *src, size_t n);
void mem_zero(void *dst, size_t n);
bool mem_equal(const void *a, const void *b, size_t n);
bool mem_is_zero(const void *p, size_t n);

bool guid_equal(const struct vhdx_guid *a, const struct vhdx_guid *b);
void guid_read(struct vhdx_guid *g, const uint8_t *p);

bool add_overflows(uint64_t a, uint64_t b, uint64_t *sum);
/* Does [start, start + length) fit in [0, limit)?  Never overflows. */
bool range_fits(uint64_t start, uint64_t length, uint64_t limit);
bool ranges_overlap(uint64_t a_start, uint64_t a_len, uint64_t b_start, uint64_t b_len);
uint64_t align_up_mib(uint64_t value);
uint64_t min_u64(uint64_t a, uint64_t b);
uint64_t max_u64(uint64_t a, uint64_t b);
bool is_power_of_two(uint64_t v);
unsigned log2_u64(uint64_t v);

/* Heapsort of n records of `size` bytes: no recursion, no extra memory, O(n log n)
 * even for hostile input.  `before` is a strict order. */
void sort_records(void *records, uint64_t n, size_t size,
                  bool (*before)(const void *a, const void *b));

#endif

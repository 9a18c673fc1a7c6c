/*
 * crc32c.h - CRC-32C as VHDX uses it (spec 2, digest section 11), and the arithmetic
 * that combines CRCs of adjacent ranges without reading them again.
 *
 * crc32c_raw() runs the bare register (no initial value, no final XOR), which is linear:
 * raw(r, A || B) = crc32c_shift(raw(r, A), |B|) XOR raw(0, B).  So the CRC of any range of
 * the log follows from the raw CRCs of its prefixes, and each log byte is read and
 * checksummed once however many entries a hostile log makes overlap (log scan).
 */
#ifndef VHDX_CRC32C_H
#define VHDX_CRC32C_H

#include "vhdx.h"

uint32_t crc32c_raw(uint32_t reg, const void *data, size_t length);
/* The register after `bytes` more zero bytes: reg * x^(8 * bytes) mod P. */
uint32_t crc32c_shift(uint32_t reg, uint64_t bytes);
/* The checksum of a header, region table or log entry: bytes 4..7 count as zero. */
uint32_t crc_with_zero_field(const uint8_t *p, size_t length);

#endif

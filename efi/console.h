/*
 * console.h - text output on the firmware console (ConOut), printf-style.
 *
 * Formats: %s (UTF-8 text, NULL prints "(null)"), %c, %d %u %x (int / unsigned),
 * %lld %llu %llx (64-bit), %zu, %%.  A width may precede d/u/x (zero-padded with a
 * leading 0, e.g. %08llx).  '\n' becomes CR LF.  Output is dropped, never an error.
 */
#ifndef VHDX_EFI_CONSOLE_H
#define VHDX_EFI_CONSOLE_H

#include <stdarg.h>
#include <stddef.h>

void con_print(const char *format, ...) __attribute__((format(printf, 1, 2)));
void con_vprint(const char *format, va_list args);

/* The same formatting into a buffer (always NUL-terminated when size > 0). */
size_t con_format(char *buffer, size_t size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
size_t con_vformat(char *buffer, size_t size, const char *format, va_list args);

/*
 * A byte count for people: "64 MiB", "4 GiB", "64 TiB", "20.5 MiB", "700 KiB", "12 bytes"
 * (rounded down: "at most" is the safe reading of a free-space figure).
 */
void con_size_text(char *buffer, size_t size, unsigned long long bytes);

#endif

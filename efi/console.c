/*
 * console.c - printf-style output to ConOut.  Text is formatted as UTF-8 into a small
 * buffer, then converted to UCS-2 in pieces for OutputString.
 */
#include "console.h"

#include <stdbool.h>
#include <stdint.h>

#include "system.h"

/* Where formatted bytes go: a bounded buffer, counting what would not fit. */
struct sink {
    char *buffer;
    size_t size;
    size_t length;              /* bytes produced so far (may exceed size) */
};

static void put(struct sink *sink, char c)
{
    if (sink->length + 1 < sink->size)
        sink->buffer[sink->length] = c;
    sink->length++;
}

static void put_text(struct sink *sink, const char *text)
{
    if (!text)
        text = "(null)";
    while (*text)
        put(sink, *text++);
}

static void put_number(struct sink *sink, uint64_t value, bool negative, unsigned base,
                       unsigned width, bool zero_pad)
{
    char digits[24];
    unsigned n = 0;

    do {
        unsigned d = (unsigned)(value % base);

        digits[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        value /= base;
    } while (value);
    if (negative)
        put(sink, '-');
    while (width > n + negative) {
        put(sink, zero_pad ? '0' : ' ');
        width--;
    }
    while (n)
        put(sink, digits[--n]);
}

static void format(struct sink *sink, const char *fmt, va_list args)
{
    for (; *fmt; fmt++) {
        unsigned width = 0, longs = 0;
        bool zero_pad = false, size_t_arg = false;
        uint64_t value;
        int64_t signed_value;

        if (*fmt != '%') {
            put(sink, *fmt);
            continue;
        }
        fmt++;
        if (*fmt == '0')
            zero_pad = true;
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (unsigned)(*fmt++ - '0');
        while (*fmt == 'l') {
            longs++;
            fmt++;
        }
        if (*fmt == 'z') {
            size_t_arg = true;
            fmt++;
        }
        switch (*fmt) {
        case 's':
            put_text(sink, va_arg(args, const char *));
            break;
        case 'c':
            put(sink, (char)va_arg(args, int));
            break;
        case 'd':
            signed_value = longs ? va_arg(args, long long) : size_t_arg ?
                           (int64_t)va_arg(args, size_t) : va_arg(args, int);
            value = signed_value < 0 ? (uint64_t)0 - (uint64_t)signed_value
                                     : (uint64_t)signed_value;
            put_number(sink, value, signed_value < 0, 10, width, zero_pad);
            break;
        case 'u':
        case 'x':
            value = longs ? va_arg(args, unsigned long long) : size_t_arg ?
                    va_arg(args, size_t) : va_arg(args, unsigned);
            put_number(sink, value, false, *fmt == 'x' ? 16 : 10, width, zero_pad);
            break;
        case '%':
            put(sink, '%');
            break;
        case '\0':
            return;
        default:
            put(sink, '%');
            put(sink, *fmt);
            break;
        }
    }
}

size_t con_vformat(char *buffer, size_t size, const char *fmt, va_list args)
{
    struct sink sink = { buffer, size, 0 };

    format(&sink, fmt, args);
    if (size)
        buffer[sink.length < size ? sink.length : size - 1] = '\0';
    return sink.length < size ? sink.length : (size ? size - 1 : 0);
}

size_t con_format(char *buffer, size_t size, const char *fmt, ...)
{
    va_list args;
    size_t n;

    va_start(args, fmt);
    n = con_vformat(buffer, size, fmt, args);
    va_end(args);
    return n;
}

void con_size_text(char *buffer, size_t size, unsigned long long bytes)
{
    const unsigned long long KiB = 1ull << 10, MiB = 1ull << 20, GiB = 1ull << 30;
    const unsigned long long TiB = 1ull << 40;

    if (bytes >= TiB && bytes % TiB == 0)
        con_format(buffer, size, "%llu TiB", bytes / TiB);
    else if (bytes >= GiB && bytes % GiB == 0)
        con_format(buffer, size, "%llu GiB", bytes / GiB);
    else if (bytes >= MiB && bytes % MiB == 0)
        con_format(buffer, size, "%llu MiB", bytes / MiB);
    else if (bytes >= MiB)
        con_format(buffer, size, "%llu.%llu MiB", bytes / MiB, bytes % MiB * 10 / MiB);
    else if (bytes >= KiB)
        con_format(buffer, size, "%llu KiB", bytes / KiB);
    else
        con_format(buffer, size, "%llu bytes", bytes);
}

/*
 * Can every console show this character?  A serial terminal in a 7-bit mode (OVMF's
 * default, TTY) prints '?' for anything outside ASCII, so a file name would print as
 * "\disks\?rger.vhdx"; ConOut's TestString says so beforehand.
 */
static bool printable(SIMPLE_TEXT_OUTPUT_INTERFACE *out, CHAR16 c)
{
    CHAR16 text[2] = { c, 0 };

    return c < 0x80 || out->TestString(out, text) == EFI_SUCCESS;
}

/*
 * UTF-8 to ConOut.  A character some console cannot show goes out as "<U+00C4>" (no
 * FAT name contains '<'), so that a name means one thing on every console.
 */
static void output_utf8(const char *text)
{
    SIMPLE_TEXT_OUTPUT_INTERFACE *out = efi_systab ? efi_systab->ConOut : NULL;
    CHAR16 piece[130];
    size_t n = 0;

    if (!out)
        return;
    while (*text) {
        CHAR16 c;

        text = utf8_next(text, &c);
        if (c == '\n')
            piece[n++] = '\r';
        if (printable(out, c)) {
            piece[n++] = c;
        } else {
            static const char hex[] = "0123456789ABCDEF";
            const char *code = "<U+";

            while (*code)
                piece[n++] = (CHAR16)*code++;
            for (int shift = 12; shift >= 0; shift -= 4)
                piece[n++] = (CHAR16)hex[(c >> shift) & 0xF];
            piece[n++] = '>';
        }
        if (n >= ARRAY_SIZE(piece) - 10 || !*text) {
            piece[n] = 0;
            out->OutputString(out, piece);
            n = 0;
        }
    }
}

void con_vprint(const char *fmt, va_list args)
{
    char text[512];

    con_vformat(text, sizeof text, fmt, args);
    output_utf8(text);
}

void con_print(const char *fmt, ...)
{
    va_list args;

    va_start(args, fmt);
    con_vprint(fmt, args);
    va_end(args);
}

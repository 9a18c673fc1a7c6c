/*
 * config.c - the disk list parser (syntax in config.h).
 *
 * A line is split into words first, each "key" or "key=value" with the value optionally
 * in double quotes; then the words are checked against the keys a disk line or a global
 * line may carry.  Nothing is applied from a line that has any problem.
 */
#include "config.h"

#define MAX_WORDS 8
#define MESSAGE_MAX 160

struct word {
    const char *key;
    size_t key_length;
    const char *value;              /* NULL: no '=' */
    size_t value_length;
};

struct line_state {
    struct config *config;
    config_report_fn report;
    void *context;
    unsigned number;
    bool failed;
};

static size_t text_length(const char *s)
{
    size_t n = 0;

    while (s[n])
        n++;
    return n;
}

/* Append `text` (or its first `n` bytes) to a message being built. */
static void append(char *message, size_t *used, const char *text, size_t n)
{
    while (n-- && *text && *used + 1 < MESSAGE_MAX)
        message[(*used)++] = *text++;
    message[*used] = '\0';
}

/* Report "PREFIX'WORD'SUFFIX" for this line and mark the line as failed. */
static void complain(struct line_state *state, const char *prefix, const char *word,
                     size_t word_length, const char *suffix)
{
    char message[MESSAGE_MAX];
    size_t used = 0;

    message[0] = '\0';
    append(message, &used, prefix, text_length(prefix));
    if (word) {
        append(message, &used, "'", 1);
        append(message, &used, word, word_length);
        append(message, &used, "'", 1);
    }
    append(message, &used, suffix, text_length(suffix));
    state->config->errors++;
    state->failed = true;
    if (state->report)
        state->report(state->context, state->number, message);
}

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static bool key_is(const struct word *w, const char *name)
{
    size_t n = text_length(name);

    if (w->key_length != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = w->key[i];

        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != name[i])
            return false;
    }
    return true;
}

/* Split one line (comment already cut off) into words.  Returns the word count. */
static unsigned split_words(struct line_state *state, const char *p, const char *end,
                            struct word *words)
{
    unsigned count = 0;

    for (;;) {
        struct word w = { 0 };

        while (p < end && is_blank(*p))
            p++;
        if (p >= end)
            break;
        w.key = p;
        while (p < end && !is_blank(*p) && *p != '=' && *p != '"')
            p++;
        w.key_length = (size_t)(p - w.key);
        if (p < end && *p == '"') {
            complain(state, "a quote must follow '=' in ", w.key, w.key_length, "");
            return 0;
        }
        if (w.key_length == 0) {
            complain(state, "a value without a key", NULL, 0, "");
            return 0;
        }
        if (p < end && *p == '=') {
            p++;
            if (p < end && *p == '"') {
                const char *close = ++p;

                while (close < end && *close != '"')
                    close++;
                if (close >= end) {
                    complain(state, "unterminated quote after ", w.key, w.key_length, "=");
                    return 0;
                }
                w.value = p;
                w.value_length = (size_t)(close - p);
                p = close + 1;
                if (p < end && !is_blank(*p)) {
                    complain(state, "a blank must follow the closing quote of ", w.key,
                             w.key_length, "=");
                    return 0;
                }
            } else {
                w.value = p;
                while (p < end && !is_blank(*p)) {
                    if (*p == '"') {
                        complain(state, "a quote inside the value of ", w.key,
                                 w.key_length, "");
                        return 0;
                    }
                    p++;
                }
                w.value_length = (size_t)(p - w.value);
            }
        }
        if (count == MAX_WORDS) {
            complain(state, "too many words on the line", NULL, 0, "");
            return 0;
        }
        words[count++] = w;
    }
    return count;
}

/* SIZE: decimal digits with an optional K, M, G or T suffix. */
static bool parse_size(const char *p, size_t n, uint64_t *out)
{
    uint64_t value = 0;
    unsigned shift = 0;
    size_t i = 0;

    if (n == 0)
        return false;
    for (; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
        if (value > (CONFIG_MAX_RESERVE - 9) / 10)
            return false;
        value = value * 10 + (uint64_t)(p[i] - '0');
    }
    if (i == 0)
        return false;
    if (i < n) {
        switch (p[i]) {
        case 'K': case 'k': shift = 10; break;
        case 'M': case 'm': shift = 20; break;
        case 'G': case 'g': shift = 30; break;
        case 'T': case 't': shift = 40; break;
        default: return false;
        }
        if (++i != n)
            return false;
    }
    if (value > (CONFIG_MAX_RESERVE >> shift))
        return false;
    *out = value << shift;
    return true;
}

/*
 * The keys.  `where` says on which lines a key may appear; a key appears at most once
 * per line; its value is checked by kind before anything on the line is applied.
 */
enum key_id { KEY_IMAGE, KEY_RO, KEY_RESERVE, KEY_EXPAND, KEY_VERBOSE, KEY_LOADER, KEY_RAM,
              KEY_OWN_NFIT, KEY_SNAPSHOT, KEY_COUNT };
enum value_kind { VALUE_NONE, VALUE_SIZE, VALUE_PATH };

#define ON_DISK_LINE   1u
#define ON_GLOBAL_LINE 2u

static const struct key {
    const char *name;
    enum key_id id;
    enum value_kind value;
    unsigned where;
    const char *missing;            /* VALUE_PATH: what an empty value lacks */
} keys[] = {
    { "image",   KEY_IMAGE,   VALUE_PATH, ON_DISK_LINE, " needs the path of a .vhdx file" },
    { "ro",      KEY_RO,      VALUE_NONE, ON_DISK_LINE, NULL },
    { "reserve", KEY_RESERVE, VALUE_SIZE, ON_DISK_LINE | ON_GLOBAL_LINE, NULL },
    { "expand",  KEY_EXPAND,  VALUE_NONE, ON_DISK_LINE | ON_GLOBAL_LINE, NULL },
    { "verbose", KEY_VERBOSE, VALUE_NONE, ON_DISK_LINE | ON_GLOBAL_LINE, NULL },
    { "loader",  KEY_LOADER,  VALUE_PATH, ON_GLOBAL_LINE,
      " needs the path of an EFI application" },
    { "ram",     KEY_RAM,     VALUE_NONE, ON_DISK_LINE, NULL },
    { "own_nfit", KEY_OWN_NFIT, VALUE_NONE, ON_DISK_LINE | ON_GLOBAL_LINE, NULL },
    { "snapshot", KEY_SNAPSHOT, VALUE_NONE, ON_DISK_LINE, NULL },
};

/* What one line says, once every word is checked. */
struct line_values {
    const struct word *seen[KEY_COUNT];
    uint64_t reserve;
};

static const struct key *find_key(const struct word *w)
{
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (key_is(w, keys[i].name))
            return &keys[i];
    return NULL;
}

static void check_value(struct line_state *state, const struct key *key,
                        const struct word *w, struct line_values *values)
{
    switch (key->value) {
    case VALUE_NONE:
        if (w->value)
            complain(state, "", w->key, w->key_length, " takes no value");
        break;
    case VALUE_SIZE:
        if (!w->value || !parse_size(w->value, w->value_length, &values->reserve))
            complain(state, "", w->key, w->key_length,
                     " needs a size: digits with an optional K, M, G or T, at most 1T");
        break;
    case VALUE_PATH:
        if (!w->value || w->value_length == 0)
            complain(state, "", w->key, w->key_length, key->missing);
        else if (w->value_length >= CONFIG_PATH_MAX)
            complain(state, "the ", w->key, w->key_length, " path is too long");
        break;
    }
}

/* Check every word of a line against the table into `values`. */
static void check_words(struct line_state *state, const struct word *words, unsigned count,
                        unsigned where, struct line_values *values)
{
    for (unsigned i = 0; i < count; i++) {
        const struct word *w = &words[i];
        const struct key *key = find_key(w);

        if (!key) {
            complain(state, "unknown key ", w->key, w->key_length,
                     where == ON_DISK_LINE ? " on an image= line" : "");
        } else if (!(key->where & where)) {
            complain(state, "", w->key, w->key_length,
                     where == ON_DISK_LINE ? " belongs on a line of its own"
                                           : " belongs on an image= line");
        } else if (values->seen[key->id]) {
            complain(state, "", w->key, w->key_length, " appears twice on the line");
        } else {
            values->seen[key->id] = w;
            check_value(state, key, w, values);
        }
    }
    if (values->seen[KEY_RESERVE] && values->seen[KEY_EXPAND])
        complain(state, "expand gives room for every block: reserve= cannot go with it",
                 NULL, 0, "");
    if (values->seen[KEY_RAM] && (values->seen[KEY_RO] || values->seen[KEY_RESERVE] ||
                                  values->seen[KEY_EXPAND]))
        complain(state, "ram copies the disk into memory and never writes the file: ro, "
                 "reserve= and expand do not go with it", NULL, 0, "");
    if (values->seen[KEY_SNAPSHOT] && (values->seen[KEY_RO] || values->seen[KEY_RAM]))
        complain(state, "snapshot writes to a child it makes: ro and ram do not go with it",
                 NULL, 0, "");
}

static void copy_value(char *out, const struct word *w)
{
    for (size_t i = 0; i < w->value_length; i++)
        out[i] = w->value[i];
    out[w->value_length] = '\0';
}

static void parse_disk_line(struct line_state *state, const struct word *words,
                            unsigned count)
{
    struct config *config = state->config;
    struct config_disk disk = { 0 };
    struct line_values values = { 0 };

    check_words(state, words, count, ON_DISK_LINE, &values);
    if (state->failed)
        return;
    if (config->disk_count == CONFIG_MAX_DISKS) {
        complain(state, "too many disks (the limit is 16)", NULL, 0, "");
        return;
    }
    disk.line = state->number;
    copy_value(disk.path, values.seen[KEY_IMAGE]);
    disk.read_only = values.seen[KEY_RO] != NULL;
    disk.verbose = values.seen[KEY_VERBOSE] != NULL;
    disk.expand = values.seen[KEY_EXPAND] != NULL;
    disk.reserve_given = values.seen[KEY_RESERVE] != NULL;
    disk.reserve = values.reserve;
    disk.ram = values.seen[KEY_RAM] != NULL;
    disk.own_nfit = values.seen[KEY_OWN_NFIT] != NULL;
    disk.snapshot = values.seen[KEY_SNAPSHOT] != NULL;
    config->disks[config->disk_count++] = disk;
}

static void parse_global_line(struct line_state *state, const struct word *words,
                              unsigned count)
{
    struct config *config = state->config;
    struct line_values values = { 0 };

    check_words(state, words, count, ON_GLOBAL_LINE, &values);
    if (state->failed)
        return;
    if ((values.seen[KEY_RESERVE] || values.seen[KEY_EXPAND]) &&
        (config->reserve_given || config->expand)) {
        complain(state, "a global reserve= or expand is already set", NULL, 0, "");
        return;
    }
    if (values.seen[KEY_LOADER] && config->loader_line) {
        complain(state, "loader= is already set", NULL, 0, "");
        return;
    }
    if (values.seen[KEY_LOADER]) {
        copy_value(config->loader, values.seen[KEY_LOADER]);
        config->loader_line = state->number;
    }
    if (values.seen[KEY_VERBOSE])
        config->verbose = true;
    if (values.seen[KEY_OWN_NFIT])
        config->own_nfit = true;
    if (values.seen[KEY_EXPAND])
        config->expand = true;
    if (values.seen[KEY_RESERVE]) {
        config->reserve_given = true;
        config->reserve = values.reserve;
    }
}

static void parse_line(struct line_state *state, const char *p, const char *end)
{
    struct word words[MAX_WORDS];
    unsigned count;
    bool in_quote = false, disk_line = false;

    /* A '#' outside quotes starts a comment. */
    for (const char *q = p; q < end; q++) {
        if (*q == '"')
            in_quote = !in_quote;
        else if (*q == '#' && !in_quote) {
            end = q;
            break;
        }
    }
    count = split_words(state, p, end, words);
    if (state->failed || count == 0)
        return;
    for (unsigned i = 0; i < count; i++)
        if (key_is(&words[i], "image"))
            disk_line = true;
    if (disk_line)
        parse_disk_line(state, words, count);
    else
        parse_global_line(state, words, count);
}

void config_parse(struct config *config, const char *text, size_t length,
                  config_report_fn report, void *context)
{
    const char *p = text, *end = text + length;
    unsigned number = 0;
    uint8_t *raw = (uint8_t *)config;

    for (size_t i = 0; i < sizeof *config; i++)
        raw[i] = 0;
    while (p < end) {
        const char *eol = p;
        struct line_state state = { config, report, context, ++number, false };

        while (eol < end && *eol != '\n')
            eol++;
        parse_line(&state, p, eol);
        p = eol < end ? eol + 1 : end;
    }
}

/* UTF-8 encoding of one UTF-16 code unit (surrogates are passed through as '?'). */
static size_t put_utf8(uint16_t c, char *out, size_t room)
{
    if (c >= 0xD800 && c <= 0xDFFF)
        c = '?';
    if (c < 0x80) {
        if (room < 1)
            return 0;
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        if (room < 2)
            return 0;
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (room < 3)
        return 0;
    out[0] = (char)(0xE0 | (c >> 12));
    out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[2] = (char)(0x80 | (c & 0x3F));
    return 3;
}

size_t config_decode(const void *data, size_t size, char *out, size_t out_size,
                     const char **why)
{
    const uint8_t *b = data;
    size_t used = 0, i = 0;
    static const char too_small[] = "the text is too long";
    static const char nul_inside[] = "the text contains a NUL character";

    *why = NULL;
    if (size >= 2 && ((b[0] == 0xFF && b[1] == 0xFE) ||
                      (size % 2 == 0 && b[0] != 0 && b[1] == 0))) {
        if (b[0] == 0xFF && b[1] == 0xFE)
            i = 2;
        for (; i + 1 < size; i += 2) {
            uint16_t c = (uint16_t)(b[i] | (b[i + 1] << 8));
            size_t n;

            if (c == 0)
                break;
            n = put_utf8(c, out + used, out_size - used);
            if (n == 0) {
                *why = too_small;
                return (size_t)-1;
            }
            used += n;
        }
        for (; i + 1 < size; i += 2) {
            if (b[i] || b[i + 1]) {
                *why = nul_inside;
                return (size_t)-1;
            }
        }
        return used;
    }
    if (size >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF)
        i = 3;
    for (; i < size && b[i]; i++) {
        if (used == out_size) {
            *why = too_small;
            return (size_t)-1;
        }
        out[used++] = (char)b[i];
    }
    for (; i < size; i++) {
        if (b[i]) {
            *why = nul_inside;
            return (size_t)-1;
        }
    }
    return used;
}

/* Append the components of `path` to out[*used..], normalising as we go ("..": up one
 * directory when `allow_up`, refused otherwise). */
static const char *append_components(const char *path, bool allow_up, char *out,
                                     size_t out_size, size_t *used)
{
    const char *p = path;

    while (*p) {
        const char *start;
        size_t n;

        while (*p == '\\' || *p == '/')
            p++;
        start = p;
        while (*p && *p != '\\' && *p != '/')
            p++;
        n = (size_t)(p - start);
        if (n == 0 || (n == 1 && start[0] == '.'))
            continue;
        if (n == 2 && start[0] == '.' && start[1] == '.') {
            if (!allow_up)
                return "'..' is not allowed in a path";
            if (*used == 0)
                return "'..' climbs above the root directory";
            while (out[--*used] != '\\')
                ;
            continue;
        }
        if (*used + 1 + n + 1 > out_size)
            return "the path is too long";
        out[(*used)++] = '\\';
        for (size_t i = 0; i < n; i++)
            out[(*used)++] = start[i];
    }
    out[*used] = '\0';
    return NULL;
}

const char *config_join_path(const char *directory, const char *path, bool allow_up,
                             char *out, size_t out_size)
{
    size_t used = 0;
    const char *why;

    if (out_size < 2)
        return "the path is too long";
    out[0] = '\0';
    if (path[0] != '\\' && path[0] != '/') {
        why = append_components(directory ? directory : "", allow_up, out, out_size, &used);
        if (why)
            return why;
    }
    why = append_components(path, allow_up, out, out_size, &used);
    if (why)
        return why;
    if (used == 0)
        return "the path names the root directory";
    return NULL;
}

const char *config_resolve_path(const char *directory, const char *path, char *out,
                                size_t out_size)
{
    return config_join_path(directory, path, false, out, out_size);
}

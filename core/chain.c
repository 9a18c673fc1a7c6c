/*
 * chain.c - differencing chains (see chain.h; spec 2.6.2.6, digest 9.8).
 *
 * A child is opened and validated alone (open.c); then each parent in turn, read-only
 * (a dirty log in a parent is replayed in memory only), found through the child's
 * parent locator: relative_path, then volume_path, then absolute_win32_path.  Firmware
 * and the host tool know no drive letters or volume GUIDs, so for the last two the path
 * after the volume is tried from the root of the child's own volume.  The parent's
 * DataWriteGuid must be parent_linkage (or a non-zero parent_linkage2), its logical
 * sectors and its virtual disk the child's size.  The loop is iterative (no recursion:
 * firmware stacks are small), stops at VHDX_MAX_CHAIN_FILES, and refuses a file met
 * twice (a cycle).
 * Parents get smaller caches: a quarter of the child's, at least 16 KiB.
 */
#include "chain.h"

#include "disk.h"

#define PARENT_MIN_CACHE (16u * KIB)

static const char *const path_keys[] = { "relative_path", "volume_path", "absolute_win32_path" };

static const char *locator_value(const struct vhdx_disk *disk, const char *key)
{
    for (uint32_t i = 0; i < disk->locator.count; i++) {
        const char *k = disk->locator.pairs[i].key, *want = key;

        while (*k && *k == *want) {
            k++;
            want++;
        }
        if (*k == '\0' && *want == '\0')
            return disk->locator.pairs[i].value;
    }
    return NULL;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" (braces optional, any case) to bytes. */
static bool parse_guid(const char *text, struct vhdx_guid *guid)
{
    static const uint8_t order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
    bool braces = *text == '{';
    unsigned n = 0;

    text += braces;
    for (unsigned i = 0; i < 16; i++) {
        int high, low;

        if (i == 4 || i == 6 || i == 8 || i == 10) {
            if (*text++ != '-')
                return false;
        }
        high = hex_digit(*text++);
        low = high < 0 ? -1 : hex_digit(*text++);
        if (low < 0)
            return false;
        guid->bytes[order[n++]] = (uint8_t)(high << 4 | low);
    }
    if (braces && *text++ != '}')
        return false;
    return *text == '\0';
}

/*
 * The path open_sibling gets for a locator value: '/' becomes '\'; relative_path stays
 * relative; volume_path and absolute_win32_path lose their volume ("\\?\Volume{...}",
 * "\\?\C:", "C:", "\\server\share", "\\?\UNC\server\share") and start with '\'.
 */
static bool sibling_path(const char *key, const char *value, char *out, size_t size)
{
    const char *p = value;
    size_t n = 0;

    if (key != path_keys[0]) {
        unsigned skip = 0;

        if (p[0] == '\\' && p[1] == '\\' && p[2] == '?' && p[3] == '\\')
            p += 4;
        if ((p[0] | 0x20) >= 'a' && (p[0] | 0x20) <= 'z' && p[1] == ':') {
            p += 2;
        } else {
            if (p[0] == 'U' && p[1] == 'N' && p[2] == 'C' && p[3] == '\\')
                p += 4, skip = 2;           /* \\?\UNC\server\share\... */
            else if (p[0] == '\\' && p[1] == '\\')
                p += 2, skip = 2;           /* \\server\share\... */
            else if (p == value + 4)
                skip = 1;                   /* \\?\Volume{...}\... */
            for (; skip && *p; p++) {
                if (*p == '\\' && --skip == 0)
                    break;
            }
        }
        if (*p != '\\')
            return false;
    }
    for (; *p; p++) {
        if (n + 1 >= size)
            return false;
        out[n++] = *p == '/' ? '\\' : *p;
    }
    out[n] = '\0';
    return n > 0;
}

/* Append a formatted piece to the text in `buffer`. */
static void append(char *buffer, size_t size, const char *template, const char *s)
{
    size_t n = 0;

    while (n + 1 < size && buffer[n])
        n++;
    format_message(buffer + n, size - n, template, 0, 0, s);
}

/* Append "'path' (key)" to the list of paths tried, for the message. */
static void note_tried(char *text, size_t size, const char *path, const char *key)
{
    append(text, size, text[0] ? ", '%s'" : "'%s'", path);
    append(text, size, " (%s)", key);
}

static int fail_text(struct vhdx_disk *disk, enum vhdx_error code, const char *text)
{
    fail(disk, code, 0, 0, NULL);
    format_message(disk->report.diag.text, sizeof disk->report.diag.text, "%s", 0, 0, text);
    return code;
}

/* Find, open and check the parent of `level`; record it in level->chain. */
static int open_parent(struct vhdx_disk *child, struct vhdx_disk *level, size_t cache_bytes,
                       bool writable)
{
    const struct vhdx_platform *platform = &level->file.platform;
    struct vhdx_open_options options = { writable ? VHDX_OPEN_WRITABLE : 0, cache_bytes };
    struct chain *c = &level->chain;
    struct vhdx_guid linkage, linkage2;
    const char *linkage_text = locator_value(level, "parent_linkage");
    const char *linkage2_text = locator_value(level, "parent_linkage2");
    char tried[sizeof child->report.diag.text] = "", message[sizeof tried];
    struct vhdx_diag diag;
    bool any_path = false;
    int rc;

    /* The VHDX parent type is the only one there is (spec 2.6.2.6.1): another type names
     * nothing we can open. */
    if (!guid_equal(&level->locator.type, &GUID_LOCATOR_TYPE_VHDX))
        return fail(child, VHDX_E_LOCATOR_KEY, 0, 0, "VHDX parent type (its type is unknown)");
    if (!linkage_text || !parse_guid(linkage_text, &linkage))
        return fail(child, VHDX_E_LOCATOR_KEY, 0, 0, "valid parent_linkage");
    mem_zero(&linkage2, sizeof linkage2);
    if (linkage2_text && !parse_guid(linkage2_text, &linkage2))
        mem_zero(&linkage2, sizeof linkage2);
    for (unsigned k = 0; k < sizeof path_keys / sizeof *path_keys && !c->key; k++) {
        const char *value = locator_value(level, path_keys[k]);

        if (!value)
            continue;
        any_path = true;
        if (!sibling_path(path_keys[k], value, c->path, sizeof c->path))
            continue;
        note_tried(tried, sizeof tried, c->path, path_keys[k]);
        if (!platform->open_sibling)
            break;
        if (platform->open_sibling(platform->context, c->path, writable, &c->parent_platform) ==
            VHDX_OK)
            c->key = path_keys[k];
    }
    if (!any_path)
        return fail(child, VHDX_E_LOCATOR_KEY, 0, 0,
                    "relative_path, volume_path or absolute_win32_path");
    if (!c->key)
        return fail_text(child, VHDX_E_PARENT_NOT_FOUND,
                         platform->open_sibling ? tried : "this platform opens no other file");
    rc = disk_open(&c->parent_platform, &options, &c->parent, &diag);
    if (rc) {
        char reason[sizeof tried];

        vhdx_describe(&diag, reason, sizeof reason);
        message[0] = '\0';
        append(message, sizeof message, "'%s': ", c->path);
        append(message, sizeof message, "%s", reason);
        if (c->parent_platform.close)
            c->parent_platform.close(c->parent_platform.context);
        c->key = NULL;
        return fail_text(child, vhdx_error_class(diag.code) == VHDX_CLASS_NOT_FOUND
                                    ? VHDX_E_PARENT_NOT_FOUND : VHDX_E_PARENT_OPEN, message);
    }
    if (!guid_equal(&c->parent->headers.current.data_write_guid, &linkage)) {
        if (vhdx_guid_is_zero(&linkage2) ||
            !guid_equal(&c->parent->headers.current.data_write_guid, &linkage2)) {
            format_message(message, sizeof message, "'%s'", 0, 0, c->path);
            return fail_text(child, VHDX_E_PARENT_LINKAGE, message);
        }
        c->linkage2 = true;
    }
    if (c->parent->geometry.logical_sector_size != level->geometry.logical_sector_size)
        return fail(child, VHDX_E_PARENT_SECTOR_SIZE, c->parent->geometry.logical_sector_size,
                    level->geometry.logical_sector_size, NULL);
    if (c->parent->geometry.virtual_size != level->geometry.virtual_size)
        return fail(child, VHDX_E_PARENT_SIZE, c->parent->geometry.virtual_size,
                    level->geometry.virtual_size, NULL);
    message[0] = '\0';
    append(message, sizeof message, "parent found through %s: ", c->key);
    append(message, sizeof message, "'%s'", c->path);
    if (c->linkage2)
        append(message, sizeof message, "%s", " (linked by parent_linkage2)");
    note_text(child, VHDX_LOG_INFO, "%s", 0, 0, message);
    return VHDX_OK;
}

/* The same file twice in a chain: same header GUIDs and disk identity. */
static bool same_file(const struct vhdx_disk *a, const struct vhdx_disk *b)
{
    return guid_equal(&a->headers.current.file_write_guid, &b->headers.current.file_write_guid) &&
           guid_equal(&a->headers.current.data_write_guid, &b->headers.current.data_write_guid) &&
           guid_equal(&a->geometry.virtual_disk_id, &b->geometry.virtual_disk_id);
}

/* Close `disk` and every parent below it, each before the file it lives in. */
static int close_chain(struct vhdx_disk *disk, struct vhdx_diag *diag)
{
    struct vhdx_platform held;          /* the platform the disk being closed lives on */
    bool is_parent = false;
    int rc = VHDX_OK;

    mem_zero(&held, sizeof held);
    while (disk) {
        struct vhdx_disk *parent = disk->chain.parent;
        struct vhdx_platform parent_platform;
        struct vhdx_diag level_diag;
        int level_rc;

        /* mem_copy, not assignment: the compiler would call memcpy (freestanding). */
        mem_copy(&parent_platform, &disk->chain.parent_platform, sizeof parent_platform);
        level_rc = disk_close(disk, &level_diag);

        if (!is_parent && level_rc) {
            rc = level_rc;
            if (diag)
                mem_copy(diag, &level_diag, sizeof *diag);
        }
        if (is_parent && held.close)
            held.close(held.context);
        mem_copy(&held, &parent_platform, sizeof held);
        is_parent = true;
        disk = parent;
    }
    return rc;
}

static int open_parents(struct vhdx_disk *child, size_t cache_bytes, bool parent_writable)
{
    struct vhdx_disk *level = child;
    uint32_t depth = 0;
    int rc;

    while (level->geometry.has_parent) {
        /* The files so far: the child and `depth` parents, one more coming. */
        if (++depth >= VHDX_MAX_CHAIN_FILES)
            return fail(child, VHDX_E_CHAIN_TOO_DEEP, VHDX_MAX_CHAIN_FILES, 0, NULL);
        cache_bytes = max_u64(cache_bytes / 4, PARENT_MIN_CACHE);
        rc = open_parent(child, level, cache_bytes, parent_writable && level == child);
        if (rc)
            return rc;
        for (struct vhdx_disk *d = child; d != level->chain.parent; d = d->chain.parent) {
            if (same_file(d, level->chain.parent)) {
                return fail_text(child, VHDX_E_PARENT_CYCLE, level->chain.path);
            }
        }
        level = level->chain.parent;
    }
    for (struct vhdx_disk *d = child; d; d = d->chain.parent)
        d->chain.depth = depth--;
    return VHDX_OK;
}

int vhdx_open_with(const struct vhdx_platform *platform,
                   const struct vhdx_open_options *options, struct vhdx_disk **out,
                   struct vhdx_diag *diag)
{
    struct vhdx_disk *disk;
    int rc = disk_open(platform, options, &disk, diag);

    if (rc)
        return rc;
    if (disk->geometry.has_parent && !(options->flags & VHDX_OPEN_NO_PARENT)) {
        rc = open_parents(disk, options->cache_bytes ? options->cache_bytes
                                                     : VHDX_DEFAULT_CACHE_BYTES,
                          (options->flags & VHDX_OPEN_PARENT_WRITABLE) &&
                          disk->file.writable);
        if (rc) {
            if (diag)
                mem_copy(diag, &disk->report.diag, sizeof *diag);
            close_chain(disk, NULL);
            return rc;
        }
    }
    *out = disk;
    return VHDX_OK;
}

int vhdx_open(const struct vhdx_platform *platform, unsigned flags,
              struct vhdx_disk **disk, struct vhdx_diag *diag)
{
    struct vhdx_open_options options = { flags, 0 };

    return vhdx_open_with(platform, &options, disk, diag);
}

int vhdx_close(struct vhdx_disk *disk, struct vhdx_diag *diag)
{
    if (diag)
        mem_zero(diag, sizeof *diag);
    return disk ? close_chain(disk, diag) : VHDX_OK;
}

struct vhdx_disk *vhdx_parent(const struct vhdx_disk *disk)
{
    return disk->chain.parent;
}

/*
 * create.c - `vhdx create IMAGE --size N [--block-size N] [--sector-size 512|4096]
 * [--fixed]` and `vhdx create CHILD --parent PARENT`.
 *
 * A child takes its parent's size and sector sizes.  Its parent locator (spec 2.6.2.6)
 * holds parent_linkage, the parent's DataWriteGuid in the lower-case braced form every
 * reader matches (libvhdi matches no other); relative_path, the parent from the child's
 * directory in Hyper-V's form (".\name.vhdx", "..\dir\name.vhdx"); and
 * absolute_win32_path, the parent's path from the root of its file system with '\'
 * separators (no drive letter exists here; readers fall back to relative_path first).
 * The new file is made with O_EXCL: an existing file is never overwritten.
 *
 * `vhdx merge CHILD` commits a child into its parent (vhdx_merge: crash-safe through
 * parent_linkage2), with the progress on stderr when it is a terminal.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* `path`'s directory, as an absolute path without a trailing '/'. */
static bool directory_of(const char *path, char *out, size_t size)
{
    char copy[PATH_MAX];
    char *slash;

    snprintf(copy, sizeof copy, "%s", path);
    slash = strrchr(copy, '/');
    if (!slash)
        snprintf(copy, sizeof copy, ".");
    else if (slash == copy)
        copy[1] = '\0';
    else
        *slash = '\0';
    return realpath(copy, out) && strlen(out) < size;
}

/* The relative path from directory `from` to file `to` (both absolute), '\' separated:
 * ".\name" beside it, "..\dir\name" elsewhere. */
static void relative_path(const char *from, const char *to, char *out, size_t size)
{
    size_t common = 0, n = 0;
    int ups = 0;

    /* The longest common run of whole components ("/a/b" and "/a/bc" share "/a"). */
    for (size_t i = 0;; i++) {
        bool from_end = from[i] == '\0' || from[i] == '/';

        if (from_end && (to[i] == '/' || to[i] == '\0'))
            common = i;
        if (from[i] == '\0' || from[i] != to[i])
            break;
    }
    for (const char *p = from + common; *p; p++)
        ups += *p == '/';
    n += (size_t)snprintf(out, size, "%s", ups ? ".." : ".");
    for (int k = 1; k < ups && n < size; k++)
        n += (size_t)snprintf(out + n, size - n, "\\..");
    for (const char *p = to + common; *p && n + 1 < size; p++)
        out[n++] = *p == '/' ? '\\' : *p;
    out[n < size ? n : size - 1] = '\0';
}

/* The parent's path from the root of its file system (its mount point), '\' separated. */
static void volume_path(const char *absolute, char *out, size_t size)
{
    char mount[PATH_MAX];
    struct stat file, up;
    size_t n = 0;

    snprintf(mount, sizeof mount, "%s", absolute);
    if (stat(absolute, &file) == 0) {
        for (;;) {
            char parent[PATH_MAX];
            char *slash = strrchr(mount, '/');

            if (!slash || slash == mount)
                break;
            snprintf(parent, sizeof parent, "%.*s", (int)(slash - mount), mount);
            if (stat(parent, &up) != 0 || up.st_dev != file.st_dev)
                break;
            *slash = '\0';
        }
    }
    /* `mount` is now the deepest directory on the same device: the path continues after it. */
    for (const char *p = absolute + (strcmp(mount, absolute) ? strlen(mount) : 0);
         *p && n + 1 < size; p++)
        out[n++] = *p == '/' ? '\\' : *p;
    out[n] = '\0';
}

int cmd_create(const struct options *o)
{
    struct vhdx_create_options create = { 0 };
    struct vhdx_locator_entry locator[3];
    char linkage[39], relative[PATH_MAX], absolute[PATH_MAX], child_dir[PATH_MAX];
    char parent_abs[PATH_MAX], parent_volume[PATH_MAX];
    struct posix_file file;
    struct vhdx_platform platform;
    struct vhdx_diag diag;
    int fd, err, rc;

    if (!!(o->given & OPT_PARENT) == !!(o->given & OPT_SIZE))
        return usage_error("%s", "create needs --size, or --parent for a differencing child");
    if ((o->given & OPT_PARENT) && (o->given & (OPT_FIXED | OPT_SECTOR_SIZE)))
        return usage_error("%s", "a child takes its sectors from its parent and is not fixed");
    if ((o->given & OPT_SECTOR_SIZE) && o->sector_size != 512 && o->sector_size != 4096)
        return usage_error("%s", "--sector-size is 512 or 4096");
    create.virtual_size = o->size;
    create.block_size = (uint32_t)o->block_size;
    if (o->block_size > UINT32_MAX)
        return usage_error("%s", "--block-size is at most 256M");
    create.logical_sector_size = (uint32_t)o->sector_size;
    create.fixed = o->given & OPT_FIXED;
    if (o->given & OPT_PARENT) {
        struct session parent;
        struct options parent_options = *o;
        struct vhdx_info info;

        parent_options.image = o->parent;
        parent_options.command = "info";
        if (open_image(&parent, &parent_options, false, 0))
            return EXIT_INVALID;
        vhdx_get_info(parent.disk, &info);
        close_image(&parent, o->parent);
        vhdx_guid_format(&info.data_write_guid, linkage);
        create.virtual_size = info.virtual_size;
        create.logical_sector_size = info.logical_sector_size;
        create.physical_sector_size = info.physical_sector_size;
        if (!realpath(o->parent, parent_abs) || !directory_of(o->image, child_dir,
                                                               sizeof child_dir)) {
            fprintf(stderr, "vhdx: %s: %s\n", o->image, strerror(errno));
            return EXIT_USAGE;
        }
        relative_path(child_dir, parent_abs, relative, sizeof relative);
        volume_path(parent_abs, parent_volume, sizeof parent_volume);
        snprintf(absolute, sizeof absolute, "%s", parent_volume);
        locator[0] = (struct vhdx_locator_entry){ "parent_linkage", linkage };
        locator[1] = (struct vhdx_locator_entry){ "relative_path", relative };
        locator[2] = (struct vhdx_locator_entry){ "absolute_win32_path", absolute };
        create.locator = locator;
        create.locator_count = 3;
    }
    fd = open(o->image, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "vhdx: %s: %s\n", o->image,
                errno == EEXIST ? "exists already: not overwritten" : strerror(errno));
        return EXIT_USAGE;
    }
    close(fd);
    err = posix_file_open(&file, o->image, true, &platform);
    if (err) {
        fprintf(stderr, "vhdx: %s: %s\n", o->image, strerror(err));
        unlink(o->image);
        return EXIT_USAGE;
    }
    rc = vhdx_create(&platform, &create, &diag);
    posix_file_close(&file);
    if (rc) {
        unlink(o->image);
        return report(o->image, &diag);
    }
    if (o->verbosity)
        fprintf(stderr, "vhdx: %s: created%s%s\n", o->image, create.locator ? ", child of " : "",
                create.locator ? relative : "");
    return 0;
}

static void merge_progress(void *context, uint64_t done, uint64_t total)
{
    const char *image = context;
    static unsigned shown = 101;
    unsigned percent = (unsigned)(total ? done * 100 / total : 100);

    if (percent != shown && isatty(STDERR_FILENO)) {
        fprintf(stderr, "\rvhdx: %s: merging: %3u%%", image, percent);
        shown = percent;
    }
}

int cmd_merge(const struct options *o)
{
    struct session s;
    struct vhdx_info info;
    const char *parent_path;
    int status = open_image(&s, o, true, VHDX_OPEN_PARENT_WRITABLE);

    if (status)
        return status;
    vhdx_get_info(s.disk, &info);
    if (info.type != VHDX_TYPE_DIFFERENCING) {
        fprintf(stderr, "vhdx: %s: not a differencing disk: nothing to merge into\n", o->image);
        close_image(&s, o->image);
        return EXIT_USAGE;
    }
    parent_path = info.parent_path;
    if (vhdx_merge(s.disk, merge_progress, (void *)o->image)) {
        if (isatty(STDERR_FILENO))
            fprintf(stderr, "\n");
        status = report(o->image, vhdx_last_diag(s.disk));
        close_image(&s, o->image);
        return status;
    }
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "\n");
    printf("%s: merged into its parent %s: the parent now reads as the child did; the child "
           "still reads the same through it, and can be deleted\n", o->image, parent_path);
    return close_image(&s, o->image);
}

/*
 * test_config.c - host harness for the configuration parser (efi/config.c).
 *
 *   test_config FILE            decode FILE like LoadOptions/vhdx.cfg, parse it, print
 *                               "disk PATH ro=N verbose=N reserve=BYTES|default|expand
 *                               line=N", "global verbose=N reserve=BYTES|default|expand",
 *                               "loader PATH line=N" (only when loader= is given),
 *                               "error LINE: MESSAGE" and "errors N"
 *   test_config --resolve DIR PATH   print the canonical path, or "refused: WHY"
 *   test_config --join DIR PATH      the same with '..' allowed (differencing parents)
 *
 * Exit status 0 unless the harness itself failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static void report(void *context, unsigned line, const char *message)
{
    (void)context;
    printf("error %u: %s\n", line, message);
}

static void print_reserve(int expand, int given, unsigned long long bytes)
{
    if (expand)
        printf(" reserve=expand");
    else if (given)
        printf(" reserve=%llu", bytes);
    else
        printf(" reserve=default");
}

int main(int argc, char **argv)
{
    static unsigned char raw[1 << 16];
    static char text[3 << 16];
    struct config *config;
    const char *why;
    size_t size, length;
    FILE *f;

    if (argc == 4 && (strcmp(argv[1], "--resolve") == 0 || strcmp(argv[1], "--join") == 0)) {
        char out[CONFIG_PATH_MAX];

        why = argv[1][2] == 'r' ? config_resolve_path(argv[2], argv[3], out, sizeof out)
                                : config_join_path(argv[2], argv[3], true, out, sizeof out);
        if (why)
            printf("refused: %s\n", why);
        else
            printf("%s\n", out);
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: test_config FILE | --resolve DIR PATH | --join DIR PATH\n");
        return 2;
    }
    f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    size = fread(raw, 1, sizeof raw, f);
    fclose(f);
    length = config_decode(raw, size, text, sizeof text, &why);
    if (length == (size_t)-1) {
        printf("undecodable: %s\n", why);
        return 0;
    }
    config = malloc(sizeof *config);
    if (!config)
        return 2;
    config_parse(config, text, length, report, NULL);
    for (unsigned i = 0; i < config->disk_count; i++) {
        const struct config_disk *d = &config->disks[i];

        printf("disk %s ro=%d verbose=%d", d->path, d->read_only, d->verbose);
        print_reserve(d->expand, d->reserve_given, (unsigned long long)d->reserve);
        printf(" line=%u%s%s%s\n", d->line, d->ram ? " ram" : "",
               d->own_nfit ? " own_nfit" : "", d->snapshot ? " snapshot" : "");
    }
    printf("global verbose=%d", config->verbose);
    print_reserve(config->expand, config->reserve_given, (unsigned long long)config->reserve);
    printf("%s\n", config->own_nfit ? " own_nfit" : "");
    if (config->loader_line)
        printf("loader %s line=%u\n", config->loader, config->loader_line);
    printf("errors %u\n", config->errors);
    free(config);
    return 0;
}

/*
 * memfile.h - a VHDX platform over a byte array, for unit tests (header-only).
 *
 * Counts every call, so tests can assert how the core uses the platform (one read
 * for a coalesced run, no write on a refused image, ...).
 */
#ifndef MEMFILE_H
#define MEMFILE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vhdx.h"

struct memfile {
    unsigned char *data;
    uint64_t size;
    unsigned reads, writes, flushes, grows;
    unsigned warnings, problems, errors;
    char last_message[512];
    bool quiet;
    uint64_t random_state;
    uint64_t grow_limit;        /* grow() beyond this fails with VHDX_E_NO_SPACE (0: none) */
};

static int mem_read(void *c, uint64_t off, void *buf, size_t len)
{
    struct memfile *m = c;

    m->reads++;
    if (off > m->size || len > m->size - off)
        return VHDX_E_IO;
    memcpy(buf, m->data + off, len);
    return VHDX_OK;
}

static int mem_write(void *c, uint64_t off, const void *buf, size_t len)
{
    struct memfile *m = c;

    m->writes++;
    if (off > m->size || len > m->size - off)
        return VHDX_E_IO;
    memcpy(m->data + off, buf, len);
    return VHDX_OK;
}

static int mem_flush(void *c)
{
    ((struct memfile *)c)->flushes++;
    return VHDX_OK;
}

static int mem_size(void *c, uint64_t *size)
{
    *size = ((struct memfile *)c)->size;
    return VHDX_OK;
}

static int mem_grow(void *c, uint64_t new_size)
{
    struct memfile *m = c;
    unsigned char *p;

    m->grows++;
    if (new_size <= m->size)
        return VHDX_OK;
    if (m->grow_limit && new_size > m->grow_limit)
        return VHDX_E_NO_SPACE;
    p = realloc(m->data, new_size);
    if (!p)
        return VHDX_E_NO_SPACE;
    memset(p + m->size, 0, new_size - m->size);
    m->data = p;
    m->size = new_size;
    return VHDX_OK;
}

static void *mem_allocate(void *c, size_t size)
{
    (void)c;
    return malloc(size);
}

static void mem_release(void *c, void *p)
{
    (void)c;
    free(p);
}

static void mem_log(void *c, enum vhdx_log_level level, const char *msg)
{
    struct memfile *m = c;

    m->warnings += level == VHDX_LOG_WARNING;
    m->problems += level == VHDX_LOG_PROBLEM;
    m->errors += level == VHDX_LOG_ERROR;
    snprintf(m->last_message, sizeof m->last_message, "%s", msg);
    if (!m->quiet && level <= VHDX_LOG_WARNING)
        fprintf(stderr, "  (core says: %s)\n", msg);
}

static int mem_random(void *c, uint8_t bytes[16])
{
    struct memfile *m = c;

    for (int i = 0; i < 16; i++) {
        m->random_state = m->random_state * 6364136223846793005ull + 1442695040888963407ull;
        bytes[i] = (uint8_t)(m->random_state >> 56);
    }
    return VHDX_OK;
}

static inline void memfile_platform(struct memfile *m, struct vhdx_platform *p)
{
    memset(p, 0, sizeof *p);
    p->context = m;
    p->read = mem_read;
    p->write = mem_write;
    p->flush = mem_flush;
    p->size = mem_size;
    p->grow = mem_grow;
    p->allocate = mem_allocate;
    p->release = mem_release;
    p->log = mem_log;
    p->random = mem_random;
    p->flags = VHDX_PLATFORM_GROW_ZEROES;
}

/* Load a whole file into a memfile; exits on failure (test setup). */
static inline void memfile_load(struct memfile *m, const char *path)
{
    FILE *f = fopen(path, "rb");
    long n;

    memset(m, 0, sizeof *m);
    if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    m->size = (uint64_t)n;
    m->data = malloc(m->size ? m->size : 1);
    if (!m->data || fread(m->data, 1, m->size, f) != m->size) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
}

static inline void memfile_copy(struct memfile *dst, const struct memfile *src)
{
    *dst = *src;
    dst->data = malloc(src->size);
    memcpy(dst->data, src->data, src->size);
    dst->reads = dst->writes = dst->flushes = dst->grows = 0;
    dst->warnings = dst->problems = dst->errors = 0;
}

static inline void memfile_free(struct memfile *m)
{
    free(m->data);
    m->data = NULL;
}

#endif

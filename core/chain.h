/*
 * chain.h - differencing chains (spec 2.6.2.6; owner of struct chain): the public open
 * and close, which open a differencing disk's parents below it, read-only.
 */
#ifndef VHDX_CHAIN_H
#define VHDX_CHAIN_H

#include "vhdx.h"

struct vhdx_disk;

#define CHAIN_PATH_MAX 260u

struct chain {
    struct vhdx_disk *parent;           /* opened read-only, closed with this disk */
    struct vhdx_platform parent_platform;   /* from open_sibling; its close is ours */
    const char *key;                    /* the locator key that found it */
    char path[CHAIN_PATH_MAX];          /* the path given to open_sibling */
    bool linkage2;                      /* matched parent_linkage2, not parent_linkage */
    uint32_t depth;                     /* parents below this disk */
};

#endif

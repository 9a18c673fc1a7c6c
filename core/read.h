/*
 * read.h - reading the virtual disk and its allocation map (owner of struct reader).
 *
 * Ranges a differencing disk takes from its parent are read from the parent, and so on
 * down the chain.  Each disk keeps its own run list here rather than on the stack, so
 * a chain of VHDX_MAX_CHAIN_FILES files costs little stack per level.
 */
#ifndef VHDX_READ_H
#define VHDX_READ_H

#include "resolve.h"

struct reader {
    struct resolved runs;
};

#endif

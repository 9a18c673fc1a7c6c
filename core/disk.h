/*
 * disk.h - an open image: one part per module, each written only by its module (the
 * design: core/README.md).  Every core source file includes this.
 */
#ifndef VHDX_DISK_H
#define VHDX_DISK_H

#include "bat.h"
#include "bitmap.h"
#include "cache.h"
#include "chain.h"
#include "crc32c.h"
#include "errors.h"
#include "file.h"
#include "format.h"
#include "header.h"
#include "logscan.h"
#include "logwrite.h"
#include "metadata.h"
#include "open.h"
#include "overlay.h"
#include "read.h"
#include "region.h"
#include "replay.h"
#include "resolve.h"
#include "space.h"
#include "util.h"
#include "write.h"

struct vhdx_disk {
    struct report report;           /* errors.c */
    struct file file;               /* file.c */
    struct headers headers;         /* header.c */
    struct replay replay;           /* replay.c */
    struct overlay overlay;         /* overlay.c */
    struct regions regions;         /* region.c */
    struct geometry geometry;       /* metadata.c */
    struct locator locator;         /* metadata.c */
    struct bat bat;                 /* bat.c */
    struct chain chain;             /* chain.c */
    struct space space;             /* space.c */
    struct page_cache cache;        /* cache.c */
    struct log_writer logw;         /* logwrite.c */
    struct reader reader;           /* read.c */
    struct write_state write;       /* write.c */
};

#endif

/*
 * open.h - opening, validating and closing one file (open.c); chain.c builds the public
 * open and close of a whole differencing chain on these.
 */
#ifndef VHDX_OPEN_H
#define VHDX_OPEN_H

#include "vhdx.h"

int disk_open(const struct vhdx_platform *platform, const struct vhdx_open_options *options,
              struct vhdx_disk **disk, struct vhdx_diag *diag);
/* Flush (when writable), mark the log clean, free.  Parents are the caller's. */
int disk_close(struct vhdx_disk *disk, struct vhdx_diag *diag);

#endif

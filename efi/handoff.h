/*
 * handoff.h - tell the operating system which file each mounted disk is, so it can
 * open the same file again after ExitBootServices (`vhdx attach --firmware`): one
 * volatile EFI variable per disk, in the layout of platform/handoff_format.h.
 *
 * A volatile variable can only be written while boot services exist (UEFI 2.10 section
 * 8.2), and the firmware closes its images at ExitBootServices, so the record must hold,
 * before that close, the header GUIDs the close will leave.  The core renews
 * FileWriteGuid and DataWriteGuid once per session, at its first write (spec 2.2.2.1),
 * and the close changes neither (it only empties the log).  So:
 *   handoff_publish   at mount: the record with the GUIDs as opened; a writable disk's
 *                     WriteBlocks is wrapped until the first write has renewed them,
 *                     then the record is rewritten with the new ones and the wrapper
 *                     removes itself;
 *   handoff_closing / handoff_closed
 *                     around the close in the "before ExitBootServices" event (UEFI
 *                     2.8; firmware without it closes at ExitBootServices, too late to
 *                     write): the record is confirmed CLOSED, with an empty log;
 *   handoff_withdraw  the disk was taken away (the loader returned): the variable goes.
 * Failures are reported (verbose) and never stop a mount: the OS then finds no hand-off
 * for that disk.
 */
#ifndef VHDX_EFI_HANDOFF_H
#define VHDX_EFI_HANDOFF_H

#include "mount.h"

void handoff_publish(const struct disk_set *set, struct mounted_disk *disk);
void handoff_closing(const struct mounted_disk *disk);
void handoff_closed(const struct mounted_disk *disk, bool clean);
void handoff_withdraw(struct mounted_disk *disk);

#endif

/*
 * shutdown.c - close a disk set's images when the platform goes away (see mount.h).
 *
 *   - ResetSystem: the reset notification (UEFI 2.7), when the firmware has it;
 *   - the event group "before ExitBootServices" (UEFI 2.8), where boot services still
 *     work: a full close, so the files are clean for the operating system;
 *   - ExitBootServices: whatever is still open gets a last flush and close without
 *     allocating or freeing memory, and every disk refuses I/O from then on.
 *
 * Writes of new blocks are committed as they happen (blockio.c), so even a power cut
 * leaves each file consistent; these closes only mark the logs clean.
 */
#include "mount.h"

/*
 * UEFI 2.7 section 8.5.1 (not in gnu-efi 3.0.15, whose EFI_RESET_SYSTEM also returns
 * EFI_STATUS where the specification says VOID).
 */
typedef VOID (EFIAPI *reset_notify_fn)(EFI_RESET_TYPE type, EFI_STATUS status,
                                       UINTN size, VOID *data);

struct reset_notification {
    EFI_STATUS (EFIAPI *RegisterResetNotify)(struct reset_notification *this,
                                             reset_notify_fn notify);
    EFI_STATUS (EFIAPI *UnregisterResetNotify)(struct reset_notification *this,
                                               reset_notify_fn notify);
};

/* The reset notification passes no context: one watched set per image. */
static struct disk_set *watched_set;

static VOID EFIAPI on_before_exit(EFI_EVENT event, VOID *context)
{
    (void)event;
    disk_set_shutdown(context, false);
}

static VOID EFIAPI on_exit(EFI_EVENT event, VOID *context)
{
    (void)event;
    disk_set_shutdown(context, true);
}

static VOID EFIAPI on_reset(EFI_RESET_TYPE type, EFI_STATUS status, UINTN size,
                            VOID *data)
{
    (void)type;
    (void)status;
    (void)size;
    (void)data;
    /* Block I/O may be used at TPL_CALLBACK at most; above that, rely on the log. */
    if (watched_set && efi_current_tpl() <= TPL_CALLBACK)
        disk_set_shutdown(watched_set, false);
}

EFI_STATUS disk_set_watch(struct disk_set *set)
{
    struct reset_notification *reset;
    EFI_STATUS status;

    if (watched_set)
        return EFI_ALREADY_STARTED;
    /* Firmware without the event group never signals it: ExitBootServices does it all. */
    if (efi_systab->Hdr.Revision < (2u << 16) ||
        efi_bs->CreateEventEx(EVT_NOTIFY_SIGNAL, TPL_CALLBACK, on_before_exit, set,
                              &efi_before_exit_boot_services_guid,
                              &set->before_exit_event) != EFI_SUCCESS)
        set->before_exit_event = NULL;
    status = efi_bs->CreateEvent(EVT_SIGNAL_EXIT_BOOT_SERVICES, TPL_CALLBACK, on_exit, set,
                                 &set->exit_event);
    if (status != EFI_SUCCESS)
        goto err_exit_event;
    set->reset_notification = NULL;
    if (efi_bs->LocateProtocol(&efi_reset_notification_guid, NULL,
                               (void **)&reset) == EFI_SUCCESS &&
        reset->RegisterResetNotify(reset, on_reset) == EFI_SUCCESS)
        set->reset_notification = reset;
    watched_set = set;
    return EFI_SUCCESS;

err_exit_event:
    if (set->before_exit_event)
        efi_bs->CloseEvent(set->before_exit_event);
    set->before_exit_event = NULL;
    return status;
}

void disk_set_unwatch(struct disk_set *set)
{
    struct reset_notification *reset = set->reset_notification;

    if (watched_set != set)
        return;
    if (reset)
        reset->UnregisterResetNotify(reset, on_reset);
    efi_bs->CloseEvent(set->exit_event);
    if (set->before_exit_event)
        efi_bs->CloseEvent(set->before_exit_event);
    set->reset_notification = NULL;
    set->exit_event = NULL;
    set->before_exit_event = NULL;
    watched_set = NULL;
}

/*
 * tpltest.efi - prints the task priority level it was started at.
 *
 * Applications started from the shell must run at TPL_APPLICATION (4).  A Block I/O
 * driver that re-enters the firmware FAT driver leaves the TPL raised (uefi-notes.md),
 * and every later application then sees 8 here.  Raising to HIGH_LEVEL returns the
 * old level without changing anything once restored.
 */
#include "console.h"
#include "system.h"

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab);

EFI_STATUS efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab)
{
    EFI_TPL tpl;

    efi_system_init(image, systab);
    tpl = efi_current_tpl();
    con_print("tpltest: TPL %llu\n", (unsigned long long)tpl);
    return EFI_SUCCESS;
}

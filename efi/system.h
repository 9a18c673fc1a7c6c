/*
 * system.h - the firmware's tables and the few boot-service helpers every image uses.
 *
 * gnu-efi supplies the types and the start-up code (crt0 calls efi_main with the
 * System V convention); libefi is not linked, so the globals and GUIDs live here.
 */
#ifndef VHDX_EFI_SYSTEM_H
#define VHDX_EFI_SYSTEM_H

#include <efi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The private struct that embeds `member`, from a pointer to that member. */
#define container_of(pointer, type, member) \
    ((type *)((char *)(pointer) - offsetof(type, member)))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

extern EFI_HANDLE efi_image_handle;
extern EFI_SYSTEM_TABLE *efi_systab;
extern EFI_BOOT_SERVICES *efi_bs;

/* Protocol and event-group GUIDs (gnu-efi keeps its copies in libefi). */
extern EFI_GUID efi_block_io_guid;
extern EFI_GUID efi_disk_io_guid;
extern EFI_GUID efi_device_path_guid;
extern EFI_GUID efi_loaded_image_guid;
extern EFI_GUID efi_simple_file_system_guid;
extern EFI_GUID efi_file_info_guid;
extern EFI_GUID efi_file_system_info_guid;
extern EFI_GUID efi_rng_guid;
extern EFI_GUID efi_reset_notification_guid;
extern EFI_GUID efi_before_exit_boot_services_guid;
extern EFI_GUID efi_driver_binding_guid;
extern EFI_GUID efi_component_name2_guid;

void efi_system_init(EFI_HANDLE image, EFI_SYSTEM_TABLE *systab);

/* Boot-services pool memory (EfiBootServicesData); NULL when out of memory. */
void *efi_allocate(size_t size);
void *efi_allocate_zero(size_t size);
void efi_free(void *memory);

/*
 * Time for progress lines and benchmarks: the time-stamp counter, and its ticks per
 * millisecond (measured once against Stall, 100 ms; at least 1).
 */
uint64_t efi_ticks(void);
uint64_t efi_ticks_per_ms(void);

/* The current TPL, without changing it (RaiseTPL to HIGH_LEVEL and back). */
EFI_TPL efi_current_tpl(void);

/* Size in bytes of a device path including its end node. */
size_t efi_device_path_size(const EFI_DEVICE_PATH *path);

/* The device's path followed by one file path node for `path` (pool memory), for
 * LoadImage; NULL when the device has no path or memory runs out. */
EFI_DEVICE_PATH *efi_file_device_path(EFI_HANDLE device, const CHAR16 *path);

/*
 * The file path nodes of a device path as UTF-8 ("\EFI\vhdx\vhdx.efi"; consecutive
 * nodes concatenate), "" when there are none.  Always NUL-terminated.
 */
void efi_path_text(const EFI_DEVICE_PATH *path, char *out, size_t size);

/* GetInfo of type `type` (EFI_FILE_INFO, EFI_FILE_SYSTEM_INFO) into pool memory. */
EFI_STATUS efi_get_info(EFI_FILE_PROTOCOL *file, EFI_GUID *type, void **info, UINTN *size);

/* A short text for an EFI_STATUS ("Not Found", ...), never NULL. */
const char *efi_status_text(EFI_STATUS status);

bool efi_guid_equal(const EFI_GUID *a, const EFI_GUID *b);

/* Freestanding string helpers. */
size_t str_length(const char *s);
bool str_equal(const char *a, const char *b);
size_t ucs2_length(const CHAR16 *s);

/*
 * Decode one UTF-8 sequence (up to 3 bytes: the Basic Multilingual Plane, which is all
 * UCS-2 holds); an invalid byte comes out as '?'.  Returns the next position.
 */
const char *utf8_next(const char *text, CHAR16 *out);

/* UTF-8 to NUL-terminated UCS-2; false when it does not fit in `out_chars`. */
bool utf8_to_ucs2(const char *text, CHAR16 *out, size_t out_chars);

#endif

/*
 * acpi.c - our own ACPI tables for a RAM disk, when the firmware has no RAM disk driver
 * that publishes them (ramdisk.c): an NFIT (ACPI 6.1 section 5.2.25) with one System
 * Physical Address range of the "virtual disk" type over the disk's memory, and an SSDT
 * declaring the NVDIMM root device (_HID "ACPI0012", section 9.20) that the OS's NFIT
 * driver binds to.  They go in through EFI_ACPI_TABLE_PROTOCOL (UEFI 2.10 section 20.2),
 * which links them into the XSDT and fixes the checksums.
 *
 * A firmware with NVDIMMs has an NFIT of its own; a second one would not be read (an OS
 * takes the first), and without the ACPI SDT protocol the first cannot be replaced: so
 * that case is refused.
 */
#include "byteorder.h"
#include "mount.h"

#define ACPI_TABLE_PROTOCOL_GUID \
    { 0xffe06bdd, 0x6107, 0x46a6, { 0x7b, 0xb2, 0x5a, 0x9c, 0x7e, 0xc5, 0x27, 0x5c } }
/* The NFIT address range type of a volatile virtual disk (ACPI 6.1 table 5-133). */
#define VIRTUAL_DISK_RANGE_GUID \
    { 0x77ab535a, 0x45fc, 0x624b, { 0x55, 0x60, 0xf7, 0xb2, 0x81, 0xd1, 0xf9, 0x6e } }

#define HEADER_SIZE 36              /* the System Description Table header (5.2.6) */
#define SPA_TYPE 0
#define SPA_SIZE 56
#define NFIT_SIZE (HEADER_SIZE + 4 + SPA_SIZE)

struct acpi_table_protocol {
    EFI_STATUS (EFIAPI *InstallAcpiTable)(struct acpi_table_protocol *this, VOID *table,
                                          UINTN size, UINTN *key);
    EFI_STATUS (EFIAPI *UninstallAcpiTable)(struct acpi_table_protocol *this, UINTN key);
};

/*
 * The SSDT's definition block, in AML (ACPI 6.1 section 20):
 *     Scope (\_SB) { Device (NVDR) { Name (_HID, "ACPI0012")
 *                                    Method (_STA, 0) { Return (0x0F) } } }
 */
static const uint8_t ssdt_aml[] = {
    0x10, 38, '\\', '_', 'S', 'B', '_',                 /* ScopeOp, PkgLength, \_SB_ */
    0x5B, 0x82, 30, 'N', 'V', 'D', 'R',                 /* DeviceOp, PkgLength, NVDR */
    0x08, '_', 'H', 'I', 'D',                           /* NameOp _HID */
    0x0D, 'A', 'C', 'P', 'I', '0', '0', '1', '2', 0x00, /* String "ACPI0012" */
    0x14, 9, '_', 'S', 'T', 'A', 0x00,                  /* MethodOp, PkgLength, _STA, 0 args */
    0xA4, 0x0A, 0x0F,                                   /* Return (0x0F) */
};

static EFI_GUID acpi_table_protocol_guid = ACPI_TABLE_PROTOCOL_GUID;
/* The configuration table of the ACPI 2.0+ RSDP (UEFI 2.10 section 4.6.1; gnu-efi). */
static EFI_GUID acpi_20_table_guid = ACPI_20_TABLE_GUID;
static EFI_GUID virtual_disk_range_guid = VIRTUAL_DISK_RANGE_GUID;

/* A table header (5.2.6), checksum made last by finish(). */
static void header(uint8_t *table, const char *signature, uint32_t length, uint8_t revision)
{
    static const char oem_id[6] = { 'V', 'H', 'D', 'X', ' ', ' ' };
    static const char oem_table_id[8] = { 'R', 'a', 'm', 'D', 'i', 's', 'k', ' ' };

    efi_bs->SetMem(table, length, 0);
    efi_bs->CopyMem(table, (void *)signature, 4);
    put32(table + 4, length);
    table[8] = revision;
    efi_bs->CopyMem(table + 10, (void *)oem_id, sizeof oem_id);
    efi_bs->CopyMem(table + 16, (void *)oem_table_id, sizeof oem_table_id);
    put32(table + 24, 1);                               /* OEM revision */
    efi_bs->CopyMem(table + 28, "VHDX", 4);             /* creator */
    put32(table + 32, 1);
}

static void finish(uint8_t *table, uint32_t length)
{
    uint8_t sum = 0;

    table[9] = 0;
    for (uint32_t i = 0; i < length; i++)
        sum = (uint8_t)(sum + table[i]);
    table[9] = (uint8_t)(0 - sum);
}

/* Is there an NFIT among the firmware's tables (the XSDT of the ACPI 2.0 RSDP)? */
static bool nfit_present(void)
{
    const uint8_t *rsdp = NULL, *xsdt;
    uint32_t length;

    for (UINTN i = 0; i < efi_systab->NumberOfTableEntries; i++)
        if (efi_guid_equal(&efi_systab->ConfigurationTable[i].VendorGuid, &acpi_20_table_guid))
            rsdp = efi_systab->ConfigurationTable[i].VendorTable;
    if (!rsdp || rsdp[15] < 2)
        return false;
    xsdt = (const uint8_t *)(uintptr_t)(get32(rsdp + 24) | (uint64_t)get32(rsdp + 28) << 32);
    if (!xsdt)
        return false;
    length = get32(xsdt + 4);
    for (uint32_t at = HEADER_SIZE; at + 8 <= length; at += 8) {
        const uint8_t *table = (const uint8_t *)(uintptr_t)(get32(xsdt + at) |
                                                            (uint64_t)get32(xsdt + at + 4) << 32);

        if (table && table[0] == 'N' && table[1] == 'F' && table[2] == 'I' && table[3] == 'T')
            return true;
    }
    return false;
}

EFI_STATUS acpi_publish_ram_disk(struct ram_disk *ram, const char **why)
{
    struct acpi_table_protocol *acpi;
    uint8_t nfit[NFIT_SIZE], ssdt[HEADER_SIZE + sizeof ssdt_aml];
    uint8_t *spa = nfit + HEADER_SIZE + 4;
    EFI_STATUS status;

    status = efi_bs->LocateProtocol(&acpi_table_protocol_guid, NULL, (void **)&acpi);
    if (status != EFI_SUCCESS) {
        *why = "the firmware has no EFI_ACPI_TABLE_PROTOCOL";
        return status;
    }
    if (nfit_present()) {
        *why = "the firmware has an NFIT of its own (NVDIMMs) and no RAM disk driver to "
               "add to it";
        return EFI_UNSUPPORTED;
    }
    header(nfit, "NFIT", sizeof nfit, 1);
    put16(spa, SPA_TYPE);
    put16(spa + 2, SPA_SIZE);
    /* Index 0, flags 0, proximity domain 0: as firmware RAM disk drivers publish it. */
    efi_bs->CopyMem(spa + 16, &virtual_disk_range_guid, sizeof virtual_disk_range_guid);
    put64(spa + 32, ram->base);
    put64(spa + 40, ram->size);
    finish(nfit, sizeof nfit);
    header(ssdt, "SSDT", sizeof ssdt, 2);
    efi_bs->CopyMem(ssdt + HEADER_SIZE, (void *)ssdt_aml, sizeof ssdt_aml);
    finish(ssdt, sizeof ssdt);

    status = acpi->InstallAcpiTable(acpi, ssdt, sizeof ssdt, &ram->ssdt_key);
    if (status != EFI_SUCCESS) {
        *why = "the firmware refused the SSDT";
        goto err_ssdt;
    }
    ram->ssdt_installed = true;
    status = acpi->InstallAcpiTable(acpi, nfit, sizeof nfit, &ram->nfit_key);
    if (status != EFI_SUCCESS) {
        *why = "the firmware refused the NFIT";
        goto err_nfit;
    }
    ram->nfit_installed = true;
    return EFI_SUCCESS;

err_nfit:
    acpi->UninstallAcpiTable(acpi, ram->ssdt_key);
    ram->ssdt_installed = false;
err_ssdt:
    return status;
}

void acpi_unpublish_ram_disk(struct ram_disk *ram)
{
    struct acpi_table_protocol *acpi;

    if (efi_bs->LocateProtocol(&acpi_table_protocol_guid, NULL, (void **)&acpi) != EFI_SUCCESS)
        return;
    if (ram->nfit_installed)
        acpi->UninstallAcpiTable(acpi, ram->nfit_key);
    if (ram->ssdt_installed)
        acpi->UninstallAcpiTable(acpi, ram->ssdt_key);
    ram->nfit_installed = ram->ssdt_installed = false;
}

/*
 * sbat.S - the .sbat section of vhdx.efi and vhdxboot.efi: the CSV text that shim and
 * firmware revocation schemes read (the SBAT format: a "sbat,1,..." line, then one line
 * per component).  efi.mk writes the text to $(BUILD)/efi/sbat.csv and passes its path
 * as SBAT_CSV.
 *
 * gnu-efi's linker script has no .sbat output section, and objcopy --add-section would
 * leave the section at address 0, outside the image.  Linked in like this, the linker
 * gives it an address of its own after .data, like any other section; the objcopy to PE
 * keeps it with -j .sbat.
 */
    .section .sbat, "a"
    .balign 4096
sbat_text:
    .incbin SBAT_CSV

/* No executable stack for the linker to assume. */
    .section .note.GNU-stack, "", @progbits

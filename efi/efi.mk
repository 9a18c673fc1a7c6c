# efi/efi.mk - the firmware build, included by the top Makefile (`make firmware`, part of
# `make`).  Products, all under $(BUILD)/efi/:
#
#   vhdx.efi     the Block I/O driver (boot-service driver, subsystem 11)
#   vhdxboot.efi the boot program: mounts a VHDX with the same module, starts the loader
#                inside (application; \EFI\BOOT\BOOTX64.EFI or a Boot#### entry)
#   sbat.csv     the .sbat text linked into vhdx.efi and vhdxboot.efi (efi/sbat.S)
#
# and the programs only the tests and benchmarks use (sources in tests/efi/), under
# $(BUILD)/tests/efi/:
#
#   tpltest.efi  prints the TPL it runs at (tests: must be 4, TPL_APPLICATION)
#   blkbench.efi reads through our Block I/O and the ESP's own Block I/O (make bench)
#   drvload.efi  loads a driver with LoadOptions taken from a file (tests)
#   exitbs.efi   calls ExitBootServices, then powers off (tests)
#   retloader.efi a boot loader that says where it was started from and returns (tests)
#   test_config  the configuration parser (efi/config.c) built for the host, sanitized
#
# Everything is built with gnu-efi's headers, start-up code and relocation code only:
# libefi is not linked (its Print and helpers would cost tens of KiB of the driver's
# 128 KiB budget), so efi/ carries its own console output and the few memory functions
# the compiler may call.

EFI_OUT      := $(BUILD)/efi
EFI_TEST_OUT := $(BUILD)/tests/efi
GNUEFI_INC   ?= /usr/include/efi
GNUEFI_LIB   ?= /usr/lib
EFI_ARCH     := x86_64
EFI_SIZE_LIMIT := 131072

# uefi-notes.md: EFIAPI must mean ms_abi (GNU_EFI_USE_MS_ABI), efi_main stays SysV.
# -Os, as EDK II builds its own drivers: 19 KiB smaller than -O2, and make bench's OVMF
# read ratios did not move (0.99 sequential, 0.98-0.99 random 4 KiB, both ways).
EFI_CFLAGS   := -std=gnu11 -Os -g $(WARN) -isystem $(GNUEFI_INC) -isystem $(GNUEFI_INC)/$(EFI_ARCH) \
                -Icore -Iplatform -Iefi -DGNU_EFI_USE_MS_ABI -ffreestanding -fpic \
                -fshort-wchar -mno-red-zone -fno-stack-protector -fno-stack-check \
                -fno-strict-aliasing -fno-builtin -maccumulate-outgoing-args
EFI_LDFLAGS  := -nostdlib -shared -Bsymbolic -znocombreloc --no-undefined \
                -T $(GNUEFI_LIB)/elf_$(EFI_ARCH)_efi.lds $(GNUEFI_LIB)/crt0-efi-$(EFI_ARCH).o
EFI_LIBS     := -L$(GNUEFI_LIB) -lgnuefi $(shell $(CC) -print-libgcc-file-name)
EFI_SECTIONS := -j .text -j .sdata -j .data -j .dynamic -j .dynsym -j .rel -j .rela \
                -j '.rel.*' -j '.rela.*' -j .reloc -j .sbat

# SBAT (the format shim reads, https://github.com/rhboot/shim/blob/main/SBAT.md): the
# header line, then ours: component vhdx-efi, generation 1 (raised when a security fix
# must revoke every older build), the version of the driver.  The URL is a placeholder
# until the project has a public home (README, "Secure Boot").
EFI_VERSION  := $(shell sed -n 's/^\#define VHDX_EFI_VERSION "\([^"]*\)".*/\1/p' efi/driver.c)
SBAT_GENERATION := 1
SBAT_URL     := https://vhdx-efi.invalid/
SBAT_HEADER  := sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md
SBAT_OURS    := vhdx-efi,$(SBAT_GENERATION),vhdx-efi,vhdx-efi,$(EFI_VERSION),$(SBAT_URL)

EFI_HDR      := $(wildcard efi/*.h) $(CORE_HDR) $(PLAT_HDR)
EFI_OBJ       = $(patsubst %.S,$(EFI_OUT)/obj/%.o,$(patsubst %.c,$(EFI_OUT)/obj/%.o,$(1)))

# The pieces every image links: system table access, console output, memory functions.
EFI_RUNTIME  := efi/system.c efi/console.c efi/compiler.c
# The reusable mount module (configuration -> open -> Block I/O), shared by the driver
# and the boot program: the core, the FAT mapper and the ESP platform backend.  The
# core's merging (vhdx_merge) is the host tool's alone, so it stays out (~1.5 KiB).
EFI_CORE_SRC := $(filter-out core/merge.c,$(CORE_SRC))
EFI_MOUNT    := $(EFI_CORE_SRC) platform/fat.c platform/efi_esp.c efi/config.c \
                efi/configure.c efi/diskset.c efi/snapshot.c efi/map.c efi/open.c efi/room.c \
                efi/registry.c efi/guard.c efi/blockio.c efi/ramdisk.c efi/acpi.c \
                efi/shutdown.c efi/handoff.c

EFI_DRIVER_SRC := efi/driver.c $(EFI_MOUNT) $(EFI_RUNTIME) efi/sbat.S
EFI_BOOT_SRC   := efi/vhdxboot.c $(EFI_MOUNT) $(EFI_RUNTIME) efi/sbat.S

EFI_TEST_APPS := tpltest blkbench drvload exitbs retloader
EFI_PRODUCTS := $(EFI_OUT)/vhdx.efi $(EFI_OUT)/vhdxboot.efi \
                $(patsubst %,$(EFI_TEST_OUT)/%.efi,$(EFI_TEST_APPS)) $(EFI_TEST_OUT)/test_config

firmware: $(EFI_PRODUCTS)
	@for image in vhdx vhdxboot; do \
	    size=$$(stat -c %s $(EFI_OUT)/$$image.efi); \
	    echo "$$image.efi: $$size bytes (limit $(EFI_SIZE_LIMIT))"; \
	    [ $$size -le $(EFI_SIZE_LIMIT) ] || \
	        { echo "$$image.efi is larger than 128 KiB" >&2; exit 1; }; \
	done

# Without gnu-efi every object fails on a missing header: say what is missing instead.
.PHONY: gnu-efi-present
gnu-efi-present:
	@[ -f $(GNUEFI_INC)/efi.h ] && [ -f $(GNUEFI_LIB)/crt0-efi-$(EFI_ARCH).o ] || { \
	    echo "gnu-efi is not installed ($(GNUEFI_INC)/efi.h, $(GNUEFI_LIB)/crt0-efi-$(EFI_ARCH).o):" \
	         "run scripts/deps.sh as root, or install it and set GNUEFI_INC and GNUEFI_LIB" >&2; \
	    exit 1; }

# efi.mk itself: a change of flags rebuilds the objects.
$(EFI_OUT)/obj/%.o: %.c $(EFI_HDR) efi/efi.mk | gnu-efi-present
	@mkdir -p $(dir $@)
	$(CC) $(EFI_CFLAGS) -c $< -o $@

# The text is rewritten only when it changes, so the images relink only then.
$(EFI_OUT)/sbat.csv: FORCE
	@mkdir -p $(dir $@)
	@[ -n "$(EFI_VERSION)" ] || { echo "efi.mk: no VHDX_EFI_VERSION in efi/driver.c" >&2; exit 1; }
	@printf '%s\n' '$(SBAT_HEADER)' '$(SBAT_OURS)' > $@.tmp
	@if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi

$(EFI_OUT)/obj/efi/sbat.o: efi/sbat.S $(EFI_OUT)/sbat.csv
	@mkdir -p $(dir $@)
	$(CC) -c -DSBAT_CSV='"$(EFI_OUT)/sbat.csv"' $< -o $@

.PHONY: FORCE
FORCE:

# Link a shared object, then convert it to PE/COFF with the subsystem of its kind.  The
# PE file gets no COFF symbol table (--strip-all; the .so keeps the symbols for
# debugging): left in, it is data past the last section, which signing tools warn about
# ("gaps between PE/COFF sections") and hash by a rule of their own.  A 4th argument
# "sbat" checks the .sbat section.
# $(1) is the image's path without .efi.
define efi_image
$(1).so: $(call EFI_OBJ,$(2))
	@mkdir -p $$(dir $$@)
	$(LD) $(EFI_LDFLAGS) $$^ -o $$@ $(EFI_LIBS)
$(1).efi: $(1).so
	objcopy $(EFI_SECTIONS) --strip-all --target efi-$(3)-$(EFI_ARCH) $$< $$@
	$(if $(4),@$$(EFI_SBAT_CHECK))
endef

# The images that carry SBAT: the section is in the PE file, inside the image (an
# address of its own, not 0), and holds exactly sbat.csv.  Run in their recipes.
EFI_SBAT_CHECK = objdump -h $@ | awk '$$2 == ".sbat" { found = 1; if ($$4 ~ /^0+$$/) exit 2 } \
                     END { exit !found }' || \
                 { echo "$@: no .sbat section, or one at address 0 (efi/sbat.S)" >&2; \
                   rm -f $@; exit 1; }; \
                 objcopy -O binary -j .sbat $@ $@.sbat && cmp -s $@.sbat $(EFI_OUT)/sbat.csv || \
                 { echo "$@: its .sbat section does not hold $(EFI_OUT)/sbat.csv" >&2; \
                   rm -f $@ $@.sbat; exit 1; }; \
                 rm -f $@.sbat

$(eval $(call efi_image,$(EFI_OUT)/vhdx,$(EFI_DRIVER_SRC),bsdrv,sbat))
$(eval $(call efi_image,$(EFI_OUT)/vhdxboot,$(EFI_BOOT_SRC),app,sbat))
$(eval $(call efi_image,$(EFI_TEST_OUT)/tpltest,tests/efi/tpltest.c $(EFI_RUNTIME),app))
$(eval $(call efi_image,$(EFI_TEST_OUT)/blkbench,tests/efi/blkbench.c platform/fat.c $(EFI_RUNTIME),app))
$(eval $(call efi_image,$(EFI_TEST_OUT)/drvload,tests/efi/drvload.c $(EFI_RUNTIME),app))
$(eval $(call efi_image,$(EFI_TEST_OUT)/exitbs,tests/efi/exitbs.c $(EFI_RUNTIME),app))
$(eval $(call efi_image,$(EFI_TEST_OUT)/retloader,tests/efi/retloader.c $(EFI_RUNTIME),app))

# The configuration parser is plain C: test it on the host, sanitized.
$(EFI_TEST_OUT)/test_config: tests/efi/test_config.c efi/config.c efi/config.h
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -Iefi tests/efi/test_config.c efi/config.c $(SAN_LDFLAGS) -o $@

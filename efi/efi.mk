# efi/efi.mk - the firmware build, included by the top Makefile (`make firmware`, part of
# `make`).  Products, all under $(BUILD)/efi/:
#
#   vhdx.efi     the Block I/O driver (boot-service driver, subsystem 11)
#   vhdxboot.efi the boot program: mounts a VHDX with the same module, starts the loader
#                inside (application; \EFI\BOOT\BOOTX64.EFI or a Boot#### entry)
#   tpltest.efi  prints the TPL it runs at (tests: must be 4, TPL_APPLICATION)
#   blkbench.efi reads through our Block I/O and the ESP's own Block I/O (make bench)
#   drvload.efi  loads a driver with LoadOptions taken from a file (tests)
#   exitbs.efi   calls ExitBootServices, then powers off (tests)
#   retloader.efi a boot loader that says where it was started from and returns (tests)
#   host/test_config  the configuration parser built for the host (tests)
#
# Everything is built with gnu-efi's headers, start-up code and relocation code only:
# libefi is not linked (its Print and helpers would cost tens of KiB of the driver's
# 128 KiB budget), so efi/ carries its own console output and the few memory functions
# the compiler may call.

EFI_OUT      := $(BUILD)/efi
GNUEFI_INC   ?= /usr/include/efi
GNUEFI_LIB   ?= /usr/lib
EFI_ARCH     := x86_64
EFI_SIZE_LIMIT := 131072

# uefi-notes.md: EFIAPI must mean ms_abi (GNU_EFI_USE_MS_ABI), efi_main stays SysV.
EFI_CFLAGS   := -std=gnu11 -O2 -g $(WARN) -isystem $(GNUEFI_INC) -isystem $(GNUEFI_INC)/$(EFI_ARCH) \
                -Icore -Iplatform -Iefi -DGNU_EFI_USE_MS_ABI -ffreestanding -fpic \
                -fshort-wchar -mno-red-zone -fno-stack-protector -fno-stack-check \
                -fno-strict-aliasing -fno-builtin -maccumulate-outgoing-args
EFI_LDFLAGS  := -nostdlib -shared -Bsymbolic -znocombreloc --no-undefined \
                -T $(GNUEFI_LIB)/elf_$(EFI_ARCH)_efi.lds $(GNUEFI_LIB)/crt0-efi-$(EFI_ARCH).o
EFI_LIBS     := -L$(GNUEFI_LIB) -lgnuefi $(shell $(CC) -print-libgcc-file-name)
EFI_SECTIONS := -j .text -j .sdata -j .data -j .dynamic -j .dynsym -j .rel -j .rela \
                -j '.rel.*' -j '.rela.*' -j .reloc

EFI_HDR      := $(wildcard efi/*.h) $(CORE_HDR) $(PLAT_HDR)
EFI_OBJ       = $(patsubst %.c,$(EFI_OUT)/obj/%.o,$(1))

# The pieces every image links: system table access, console output, memory functions.
EFI_RUNTIME  := efi/system.c efi/console.c efi/compiler.c
# The reusable mount module (configuration -> open -> Block I/O), shared by the driver
# and the boot program: the core, the FAT mapper and the ESP platform backend.
EFI_MOUNT    := $(CORE_SRC) platform/fat.c platform/efi_esp.c efi/config.c efi/disk.c \
                efi/blockio.c efi/shutdown.c efi/handoff.c

EFI_DRIVER_SRC := efi/driver.c $(EFI_MOUNT) $(EFI_RUNTIME)
EFI_BOOT_SRC   := efi/vhdxboot.c $(EFI_MOUNT) $(EFI_RUNTIME)

EFI_APPS     := tpltest blkbench drvload exitbs retloader
EFI_PRODUCTS := $(EFI_OUT)/vhdx.efi $(EFI_OUT)/vhdxboot.efi \
                $(patsubst %,$(EFI_OUT)/%.efi,$(EFI_APPS)) $(EFI_OUT)/host/test_config

firmware: $(EFI_PRODUCTS)
	@for image in vhdx vhdxboot; do \
	    size=$$(stat -c %s $(EFI_OUT)/$$image.efi); \
	    echo "$$image.efi: $$size bytes (limit $(EFI_SIZE_LIMIT))"; \
	    [ $$size -le $(EFI_SIZE_LIMIT) ] || \
	        { echo "$$image.efi is larger than 128 KiB" >&2; exit 1; }; \
	done

$(EFI_OUT)/obj/%.o: %.c $(EFI_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(EFI_CFLAGS) -c $< -o $@

# Link a shared object, then convert it to PE/COFF with the subsystem of its kind.
define efi_image
$(EFI_OUT)/$(1).so: $(call EFI_OBJ,$(2))
	@mkdir -p $$(dir $$@)
	$(LD) $(EFI_LDFLAGS) $$^ -o $$@ $(EFI_LIBS)
$(EFI_OUT)/$(1).efi: $(EFI_OUT)/$(1).so
	objcopy $(EFI_SECTIONS) --target efi-$(3)-$(EFI_ARCH) $$< $$@
endef

$(eval $(call efi_image,vhdx,$(EFI_DRIVER_SRC),bsdrv))
$(eval $(call efi_image,vhdxboot,$(EFI_BOOT_SRC),app))
$(eval $(call efi_image,tpltest,efi/tpltest.c $(EFI_RUNTIME),app))
$(eval $(call efi_image,blkbench,efi/blkbench.c platform/fat.c $(EFI_RUNTIME),app))
$(eval $(call efi_image,drvload,efi/drvload.c $(EFI_RUNTIME),app))
$(eval $(call efi_image,exitbs,efi/exitbs.c $(EFI_RUNTIME),app))
$(eval $(call efi_image,retloader,efi/retloader.c $(EFI_RUNTIME),app))

# The configuration parser is plain C: test it on the host, sanitized.
$(EFI_OUT)/host/test_config: efi/test_config.c efi/config.c efi/config.h
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -Iefi efi/test_config.c efi/config.c $(SAN_LDFLAGS) -o $@

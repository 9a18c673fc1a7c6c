# vhdx-efi build.  `make` builds everything, `make run` boots Linux from a VHDX in OVMF
# (the default: Linux with its root file system inside the VHDX, booted twice; LOADER=
# sdboot or grub for the disks without a root partition, SECUREBOOT=1 under Secure Boot,
# MODE=ram with the disk copied into memory and the root on /dev/pmem0), `make check`
# runs every test and ends with "N passed, N failed", `make bench` runs the benchmarks,
# `make sign KEY=... CERT=...` signs vhdx.efi and vhdxboot.efi, `make install` installs
# what a system with its root inside a VHDX needs.  Products go under build/.
# Each first installs the Debian packages it needs when they are missing
# (scripts/deps.sh), or stops saying which are missing.

BUILD      := build
CC         ?= cc
PYTHON     := /usr/bin/python3

WARN       := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
              -Wpointer-arith -Wvla -Wno-unused-parameter
HOST_INC   := -Icore -Iplatform
REL_CFLAGS := -std=c11 -O2 -g $(WARN) $(HOST_INC) -D_FILE_OFFSET_BITS=64 -D_GNU_SOURCE
SAN_CFLAGS := -std=c11 -O1 -g $(WARN) $(HOST_INC) -D_FILE_OFFSET_BITS=64 -D_GNU_SOURCE \
              -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
SAN_LDFLAGS := -fsanitize=address,undefined

CORE_SRC   := $(sort $(wildcard core/*.c))
CORE_HDR   := $(wildcard core/*.h)
# Host-side platform code: everything in platform/ except the firmware backends (efi_*.c).
HOSTPLAT_SRC := $(sort $(filter-out platform/efi_%.c,$(wildcard platform/*.c)))
PLAT_HDR   := $(wildcard platform/*.h)
TOOL_SRC   := $(sort $(wildcard tools/*.c))
TOOL_HDR   := $(wildcard tools/*.h)
UNIT_SRC   := $(sort $(wildcard tests/c/*.c))

REL_OBJ    = $(patsubst %.c,$(BUILD)/rel/%.o,$(CORE_SRC) $(HOSTPLAT_SRC))
SAN_OBJ    = $(patsubst %.c,$(BUILD)/san/%.o,$(CORE_SRC) $(HOSTPLAT_SRC))
UNIT_BIN   = $(patsubst tests/c/%.c,$(BUILD)/san/tests/%,$(UNIT_SRC))
BENCH_SRC  := $(sort $(wildcard tests/bench/*.c))
BENCH_BIN  = $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(BENCH_SRC))

.PHONY: all build host check bench deps deps-build clean freestanding run sign fuzz \
        fuzz-coverage install
# Packages first, then the build (not as parallel prerequisites: `make -j` would build
# before the packages are there).
all: deps-build
	@$(MAKE) --no-print-directory build
build: host firmware
host: $(BUILD)/vhdx $(BUILD)/san/vhdx $(BUILD)/static/vhdx $(UNIT_BIN) $(BENCH_BIN) \
      $(BUILD)/san/fuzz_corpus

$(BUILD)/rel/%.o: %.c $(CORE_HDR) $(PLAT_HDR) $(TOOL_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -c $< -o $@

$(BUILD)/san/%.o: %.c $(CORE_HDR) $(PLAT_HDR) $(TOOL_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -c $< -o $@

# The release tool (benchmarks, users) and the sanitized tool (every test).
$(BUILD)/vhdx: $(REL_OBJ) $(patsubst %.c,$(BUILD)/rel/%.o,$(TOOL_SRC))
	$(CC) $^ -o $@

$(BUILD)/san/vhdx: $(SAN_OBJ) $(patsubst %.c,$(BUILD)/san/%.o,$(TOOL_SRC))
	$(CC) $(SAN_LDFLAGS) $^ -o $@

# The same tool linked statically, for initramfs images and /run/initramfs/shutdown
# (nothing to load from a root file system that is not there yet, or is going away).
# glibc warns that getaddrinfo (vhdx serve --bind NAME) would need its shared NSS
# modules: attach, detach and the shutdown helper never call it.
$(BUILD)/static/vhdx: $(REL_OBJ) $(patsubst %.c,$(BUILD)/rel/%.o,$(TOOL_SRC))
	@mkdir -p $(dir $@)
	$(CC) -static -s $^ -o $@ 2> $@.log || { cat $@.log >&2; exit 1; }
	@grep -v -e getaddrinfo -e 'in function' $@.log >&2 || true

# Unit tests: one sanitized program per tests/c/*.c, linked with the core and host platform
# (and the tool objects named as its prerequisites).
$(BUILD)/san/tests/test_handoff: $(BUILD)/san/tools/handoff.o
$(BUILD)/san/tests/%: tests/c/%.c tests/c/check.h $(SAN_OBJ) $(CORE_HDR) $(PLAT_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -Itests/c -Itools $< $(SAN_OBJ) \
	    $(filter $(BUILD)/san/tools/%.o,$^) $(SAN_LDFLAGS) -o $@

# The fuzz target (tests/fuzz/fuzz_vhdx.c) over the in-memory platform.  --wrap lets it
# count the core's checksummed and compared bytes (its work bounds) without touching core/.
FUZZ_SRC   := tests/fuzz/fuzz_vhdx.c
FUZZ_WRAP  := -Wl,--wrap=vhdx_crc32c,--wrap=crc_with_zero_field,--wrap=mem_equal
FUZZ_CORE  := $(CORE_SRC) platform/mem.c

# Without libFuzzer: runs corpus files (make check's regression pass, tests/fuzz_corpus.test).
$(BUILD)/san/fuzz_corpus: tests/fuzz/corpus_main.c $(FUZZ_SRC) $(SAN_OBJ)
	$(CC) $(SAN_CFLAGS) tests/fuzz/corpus_main.c $(FUZZ_SRC) $(SAN_OBJ) $(SAN_LDFLAGS) \
	    $(FUZZ_WRAP) -o $@

# With libFuzzer (clang): `make fuzz SECONDS=N` fuzzes for N seconds (not part of check);
# `make fuzz-coverage` measures core/ coverage of the corpus (llvm-cov, a separate build).
# Only core/ gets libFuzzer's coverage instrumentation: the harness and the in-memory
# platform would be noise in its feedback, and their loops would cost half the time.
FUZZ_CC    := clang
FUZZ_FLAGS := -std=c11 -g -O1 $(WARN) $(HOST_INC) -D_GNU_SOURCE -fno-omit-frame-pointer \
              -fno-sanitize-recover=all
FUZZ_SAN   := -fsanitize=address,undefined
$(BUILD)/fuzz/obj/core/%.o: core/%.c $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c $< -o $@
$(BUILD)/fuzz/obj/%.o: %.c $(CORE_HDR) $(PLAT_HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_SAN) -c $< -o $@
$(BUILD)/fuzz/fuzz_vhdx: $(patsubst %.c,$(BUILD)/fuzz/obj/%.o,$(FUZZ_SRC) $(FUZZ_CORE))
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer $^ $(FUZZ_WRAP) -o $@
$(BUILD)/cov/fuzz_corpus: tests/fuzz/corpus_main.c $(FUZZ_SRC) $(FUZZ_CORE) $(CORE_HDR) $(PLAT_HDR)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fprofile-instr-generate -fcoverage-mapping \
	    tests/fuzz/corpus_main.c $(FUZZ_SRC) $(FUZZ_CORE) $(FUZZ_WRAP) -o $@

SECONDS ?= 300
fuzz:
	@./scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory $(BUILD)/fuzz/fuzz_vhdx $(BUILD)/san/fuzz_corpus
	@BUILD=$(abspath $(BUILD)) ./tests/fuzz/run.sh fuzz $(SECONDS)
fuzz-coverage:
	@./scripts/deps.sh fuzz
	@$(MAKE) --no-print-directory $(BUILD)/cov/fuzz_corpus
	@BUILD=$(abspath $(BUILD)) ./tests/fuzz/run.sh coverage

# Firmware (gnu-efi): efi/efi.mk defines the `firmware` target and build/efi/*.efi.
-include efi/efi.mk
.PHONY: firmware
firmware:

# Benchmarks: optimized, not sanitized, linked with the release core.
$(BUILD)/bench/%: tests/bench/%.c $(REL_OBJ) $(CORE_HDR) $(PLAT_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) $< $(REL_OBJ) -o $@

deps:
	@./scripts/deps.sh all

deps-build:
	@./scripts/deps.sh build

check: deps
	@$(MAKE) --no-print-directory build
	@BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) ./tests/run.sh

bench: deps
	@$(MAKE) --no-print-directory build
	@BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) ./tests/bench/run.sh

# The README's main command: demo disk -> VHDX -> outer ESP with vhdxboot.efi -> OVMF.
# LOADER: root (the default, unless SECUREBOOT or MODE=ram ask for sdboot: Linux keeps
# its root file system inside the VHDX, booted twice), sdboot or grub (the kernel's
# initramfs only).  deps first, then the build (not as parallel prerequisites: `make -j`
# would build before the packages are there).
LOADER ?=
SECUREBOOT ?=
MODE ?= disk
run: deps
	@$(MAKE) --no-print-directory build
	@$(PYTHON) ovmf-scripts/run_demo.py --build $(abspath $(BUILD)) $(if $(LOADER),--loader $(LOADER)) \
	    $(if $(filter-out 0,$(SECUREBOOT)),--secure-boot) --mode $(MODE)

# Secure Boot signing (sbsign) into $(BUILD)/efi/signed/, each file checked with
# sbverify and its .sbat section kept.  Without KEY and CERT: the test key of Debian's
# OVMF, trusted only by its OVMF_VARS_4M.snakeoil.fd store.  KEY_PASS is the key's
# passphrase (sbsign asks for it when it is needed and not given).
SNAKEOIL_KEY := /usr/share/ovmf/PkKek-1-snakeoil.key
KEY  ?= $(SNAKEOIL_KEY)
CERT ?= /usr/share/ovmf/PkKek-1-snakeoil.pem
KEY_PASS ?= $(if $(filter $(SNAKEOIL_KEY),$(KEY)),snakeoil)
sign: deps
	@$(MAKE) --no-print-directory firmware
	@$(PYTHON) ovmf-scripts/secureboot.py sign --key $(KEY) --cert $(CERT) \
	    $(if $(KEY_PASS),--pass '$(KEY_PASS)') --out $(BUILD)/efi/signed \
	    $(BUILD)/efi/vhdx.efi $(BUILD)/efi/vhdxboot.efi

# Install what a system whose root file system lives in a VHDX needs (issue 12):
#   $(SBINDIR)/vhdx                 the static tool (also the shutdown helper it copies
#                                   to /run/initramfs/shutdown)
#   $(LIBDIR)/vhdx.efi, vhdxboot.efi  the firmware programs, to copy onto the ESP
#   the initramfs-tools hook and local-top script, and the dracut module "vhdx"
# DESTDIR is prepended to every path; PREFIX (default /usr) sets SBINDIR and LIBDIR.
# The initramfs generators only look in their own directories, so those do not follow
# PREFIX (set INITRAMFS_TOOLS_DIR or DRACUT_MODULES_DIR to change them).
PREFIX              ?= /usr
SBINDIR             ?= $(PREFIX)/sbin
LIBDIR              ?= $(PREFIX)/lib/vhdx-efi
INITRAMFS_TOOLS_DIR ?= /usr/share/initramfs-tools
DRACUT_MODULES_DIR  ?= /usr/lib/dracut/modules.d
# install FILE DEST MODE: a copy with @SBINDIR@ replaced.
install_file = install -d $(dir $(2)) && sed 's|@SBINDIR@|$(SBINDIR)|g' $(1) > $(2) && chmod $(3) $(2)

install: $(BUILD)/static/vhdx firmware
	install -D -m 0755 $(BUILD)/static/vhdx $(DESTDIR)$(SBINDIR)/vhdx
	install -D -m 0644 $(BUILD)/efi/vhdx.efi $(DESTDIR)$(LIBDIR)/vhdx.efi
	install -D -m 0644 $(BUILD)/efi/vhdxboot.efi $(DESTDIR)$(LIBDIR)/vhdxboot.efi
	$(call install_file,dist/initramfs-tools/hooks/vhdx,$(DESTDIR)$(INITRAMFS_TOOLS_DIR)/hooks/vhdx,0755)
	$(call install_file,dist/initramfs-tools/scripts/local-top/vhdx,$(DESTDIR)$(INITRAMFS_TOOLS_DIR)/scripts/local-top/vhdx,0755)
	$(call install_file,dist/dracut/90vhdx/module-setup.sh,$(DESTDIR)$(DRACUT_MODULES_DIR)/90vhdx/module-setup.sh,0755)
	$(call install_file,dist/dracut/90vhdx/vhdx-attach.service,$(DESTDIR)$(DRACUT_MODULES_DIR)/90vhdx/vhdx-attach.service,0644)
	$(call install_file,dist/dracut/90vhdx/vhdx-shutdown.sh,$(DESTDIR)$(DRACUT_MODULES_DIR)/90vhdx/vhdx-shutdown.sh,0755)

clean:
	rm -rf $(BUILD)

# vhdx-efi build.  `make` builds everything, `make run` boots Linux from a VHDX in OVMF
# (LOADER=sdboot or grub for the disks without a root partition), `make check` runs every test and ends with
# "N passed, N failed", `make bench` runs the benchmarks.  Products go under build/.

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

.PHONY: all host check bench deps clean freestanding run
all: host firmware
host: $(BUILD)/vhdx $(BUILD)/san/vhdx $(BUILD)/static/vhdx $(UNIT_BIN) $(BENCH_BIN)

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

# Unit tests: one sanitized program per tests/c/*.c, linked with the core and host platform.
$(BUILD)/san/tests/%: tests/c/%.c $(SAN_OBJ) $(CORE_HDR) $(PLAT_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -Itests/c $< $(SAN_OBJ) $(SAN_LDFLAGS) -o $@

# Firmware (gnu-efi): efi/efi.mk defines the `firmware` target and build/efi/*.efi.
-include efi/efi.mk
.PHONY: firmware
firmware:

# Benchmarks: optimized, not sanitized, linked with the release core.
$(BUILD)/bench/%: tests/bench/%.c $(REL_OBJ) $(CORE_HDR) $(PLAT_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) $< $(REL_OBJ) -o $@

deps:
	@./scripts/deps.sh

check: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) ./tests/run.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) ./tests/bench/run.sh

# The README's main command: demo disk -> VHDX -> outer ESP with vhdxboot.efi -> OVMF.
# LOADER=root (the default: Linux keeps its root file system inside the VHDX, booted
# twice), sdboot or grub (the kernel's initramfs only).  deps first, then the build
# (not as parallel prerequisites: `make -j` would build before the packages are there).
LOADER ?= root
run: deps
	@$(MAKE) --no-print-directory all
	@$(PYTHON) ovmf-scripts/run_demo.py --build $(abspath $(BUILD)) --loader $(LOADER)

clean:
	rm -rf $(BUILD)

# vhdx-efi build.  `make` builds everything, `make run` boots Linux from a VHDX in OVMF
# (LOADER=grub for the GRUB disk, SECUREBOOT=1 under Secure Boot, MODE=ram with the disk
# copied into memory and the root on /dev/pmem0), `make check` runs every
# test and ends with "N passed, N failed", `make bench` runs the benchmarks, `make sign
# KEY=... CERT=...` signs vhdx.efi and vhdxboot.efi.  Products go under build/.
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
        fuzz-coverage
# Packages first, then the build (not as parallel prerequisites: `make -j` would build
# before the packages are there).
all: deps-build
	@$(MAKE) --no-print-directory build
build: host firmware
host: $(BUILD)/vhdx $(BUILD)/san/vhdx $(UNIT_BIN) $(BENCH_BIN) $(BUILD)/san/fuzz_corpus

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

# Unit tests: one sanitized program per tests/c/*.c, linked with the core and host platform.
$(BUILD)/san/tests/%: tests/c/%.c $(SAN_OBJ) $(CORE_HDR) $(PLAT_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(SAN_CFLAGS) -Itests/c $< $(SAN_OBJ) $(SAN_LDFLAGS) -o $@

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
# deps first, then the build (not as parallel prerequisites: `make -j` would build
# before the packages are there).
LOADER ?= sdboot
SECUREBOOT ?=
MODE ?= disk
run: deps
	@$(MAKE) --no-print-directory build
	@$(PYTHON) ovmf-scripts/run_demo.py --build $(abspath $(BUILD)) --loader $(LOADER) \
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

clean:
	rm -rf $(BUILD)

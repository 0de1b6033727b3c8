# A thin front over CMake, as neovim has: `make`, `make run`, `make test`,
# `make install PREFIX=...`, `make clean`.  The build lives in $(BUILD_DIR).
BUILD_DIR ?= build
BUILD_TYPE ?= Release
WERROR ?= OFF
PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE ?= cmake
CTEST ?= ctest
MAKEFLAGS += --no-print-directory

.PHONY: all build deps run test test-cuda test-asan fuzz install clean

all: build

deps:
	./scripts/install-deps.sh

build: deps
	$(CMAKE) -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DATTNSWAP_WERROR=$(WERROR)
	$(CMAKE) --build $(BUILD_DIR) -j$(JOBS)

# The seed example, then a small ViT compared across every registered attention.
run: build
	$(BUILD_DIR)/attnswap-run examples/dummy.lua
	@echo
	$(BUILD_DIR)/attnswap-run examples/tiny_vit.lua --compare all

test: build
	$(CTEST) --test-dir $(BUILD_DIR) --output-on-failure -j2

# The GPU tests only (label cuda): every CUDA op against the CPU, the flash
# kernel against the CPU flash, the Lua face.  They skip where no GPU is seen.
test-cuda: build
	$(CTEST) --test-dir $(BUILD_DIR) --output-on-failure -L cuda

# The whole suite (C tests, specs, examples) under AddressSanitizer and
# UndefinedBehaviorSanitizer with leak checking, in its own build folder.
# CPU only: the sanitizers do not see into GPU kernels, and `make test` has
# already compiled the CUDA code.
ASAN_BUILD_DIR ?= build-asan
test-asan: deps
	$(CMAKE) --preset asan -B $(ASAN_BUILD_DIR) -DATTNSWAP_WERROR=$(WERROR) -DATTNSWAP_CUDA=OFF
	$(CMAKE) --build $(ASAN_BUILD_DIR) -j$(JOBS)
	$(CTEST) --test-dir $(ASAN_BUILD_DIR) --output-on-failure -j2 -LE "packaging|soak"

# libFuzzer harnesses (tests/fuzz), each run for FUZZ_SECONDS under ASan and
# UBSan; new inputs collect in $(FUZZ_BUILD_DIR)/corpus, seeds come from tests/fuzz/corpus.
FUZZ_BUILD_DIR ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZERS ?= safetensors tensor state_dict patterns tokenizer checkpoint
fuzz: deps
	@command -v clang >/dev/null || { echo "make fuzz needs clang: apt-get install clang libclang-rt-14-dev" >&2; exit 1; }
	CC=clang $(CMAKE) -S . -B $(FUZZ_BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATTNSWAP_FUZZ=ON \
		-DATTNSWAP_SANITIZE=address,undefined -DATTNSWAP_TESTS=OFF
	$(CMAKE) --build $(FUZZ_BUILD_DIR) -j$(JOBS) $(addprefix --target fuzz_,$(FUZZERS))
	@for h in $(FUZZERS); do \
		mkdir -p $(FUZZ_BUILD_DIR)/corpus/$$h; \
		echo "fuzz_$$h: $(FUZZ_SECONDS) s"; \
		ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 $(FUZZ_BUILD_DIR)/tests/fuzz/fuzz_$$h \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_BUILD_DIR)/ $(FUZZ_BUILD_DIR)/corpus/$$h tests/fuzz/corpus/$$h \
			> $(FUZZ_BUILD_DIR)/fuzz_$$h.log 2>&1; status=$$?; \
		grep -E "^(stat::number_of_executed_units|stat::new_units_added|==[0-9]+==ERROR|SUMMARY)" $(FUZZ_BUILD_DIR)/fuzz_$$h.log; \
		[ $$status -eq 0 ] || { echo "fuzz_$$h failed: see $(FUZZ_BUILD_DIR)/fuzz_$$h.log" >&2; exit 1; }; \
	done

install: build
	$(CMAKE) --install $(BUILD_DIR) --prefix $(PREFIX)

clean:
	@case "$(BUILD_DIR)" in ""|/|.|..) echo "refusing to remove BUILD_DIR='$(BUILD_DIR)'" >&2; exit 1;; esac
	rm -rf $(BUILD_DIR)

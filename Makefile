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

.PHONY: all build deps run test test-asan install clean

all: build

deps:
	./scripts/install-deps.sh

build: deps
	$(CMAKE) -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DATTNSWAP_WERROR=$(WERROR)
	$(CMAKE) --build $(BUILD_DIR) -j$(JOBS)

# The seed example, then a ViT compared across every registered attention.
run: build
	$(BUILD_DIR)/attnswap-run examples/dummy.lua
	@echo
	$(BUILD_DIR)/attnswap-run examples/compare.lua

test: build
	$(CTEST) --test-dir $(BUILD_DIR) --output-on-failure -j2

# The whole suite (C tests, specs, examples) under AddressSanitizer and
# UndefinedBehaviorSanitizer with leak checking, in its own build folder.
ASAN_BUILD_DIR ?= build-asan
test-asan: deps
	$(CMAKE) --preset asan -B $(ASAN_BUILD_DIR) -DATTNSWAP_WERROR=$(WERROR)
	$(CMAKE) --build $(ASAN_BUILD_DIR) -j$(JOBS)
	$(CTEST) --test-dir $(ASAN_BUILD_DIR) --output-on-failure -j2 -LE packaging

install: build
	$(CMAKE) --install $(BUILD_DIR) --prefix $(PREFIX)

clean:
	@case "$(BUILD_DIR)" in ""|/|.|..) echo "refusing to remove BUILD_DIR='$(BUILD_DIR)'" >&2; exit 1;; esac
	rm -rf $(BUILD_DIR)

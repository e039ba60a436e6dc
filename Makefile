# pacsd: thin wrapper over CMake. `make` builds build/pacsd (release);
# `make run` installs what is missing, builds and starts the server on its
# embedded default (DICOM port 4242, AE PACSD, data in ./pacsd-data);
# `make test` installs what is missing (test peers too), builds the sanitized
# test build in build-test/ and runs the whole suite with ctest.

JOBS ?= $(shell nproc)
BUILD ?= build
TEST_BUILD ?= build-test
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60

.PHONY: all deps deps-test run test unit fuzz bench clean

all:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

deps:
	scripts/install-deps.sh build

deps-test:
	scripts/install-deps.sh build test

run: deps all
	$(BUILD)/pacsd serve

test: deps-test
	cmake -S . -B $(TEST_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug \
	  -DPACSD_TESTS=ON -DPACSD_SANITIZE=ON >/dev/null
	cmake --build $(TEST_BUILD) -j $(JOBS)
	cd $(TEST_BUILD) && ctest --output-on-failure -j $(JOBS)

unit:
	cmake -S . -B $(TEST_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug \
	  -DPACSD_TESTS=ON -DPACSD_SANITIZE=ON >/dev/null
	cmake --build $(TEST_BUILD) -j $(JOBS)
	cd $(TEST_BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

fuzz: deps-test
	CC=clang cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPACSD_FUZZ=ON -DPACSD_SANITIZE=ON >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	tests/fuzz/run-fuzzers.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

bench: deps-test all
	bench/run-all.sh

clean:
	rm -rf $(BUILD) $(TEST_BUILD) $(FUZZ_BUILD)

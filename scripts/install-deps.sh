#!/bin/sh
# Installs the Debian 12 packages pacsd needs, by purpose. Idempotent: runs
# apt-get update and apt-get install only when something is missing.
#   scripts/install-deps.sh build        compiler, CMake and the libraries pacsd links
#   scripts/install-deps.sh build test   ... plus the test suite's tools and peers
set -eu

# Libraries pacsd links at run time.
RUNTIME="zlib1g libjansson4 libsqlite3-0 libssl3 libmicrohttpd12"
# What building needs.
BUILD="build-essential make cmake ninja-build pkg-config zlib1g-dev libjansson-dev libsqlite3-dev libssl-dev libmicrohttpd-dev"
# Test suite: unit-test framework, fuzzing compiler and runtime, DICOM peers
# (DCMTK command-line tools, Orthanc, pydicom with its bundled test files),
# valgrind, SQLite's shell for inspecting the index in tests, Orthanc's
# DICOMweb plugin (a DICOMweb peer), Prometheus (promtool and a scraper),
# wrk (HTTP benchmarks), curl.
TEST="libcmocka-dev clang libclang-rt-14-dev dcmtk orthanc orthanc-dicomweb python3 python3-pydicom python3-numpy valgrind hyperfine sqlite3 prometheus wrk curl"
# npm clients (dicomweb-client) need Node.js and npm: Debian's, unless the
# machine already has them (a newer Node.js from elsewhere is fine).
command -v npm >/dev/null 2>&1 || TEST="$TEST nodejs npm"

want="$RUNTIME"
for purpose in "$@"; do
  case "$purpose" in
    runtime) ;;
    build) want="$want $BUILD" ;;
    test) want="$want $BUILD $TEST" ;;
    *) echo "install-deps: unknown purpose '$purpose' (runtime, build, test)" >&2; exit 2 ;;
  esac
done

missing=""
for p in $(printf '%s\n' $want | sort -u); do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages:$missing (run as root, or install them)" >&2
  exit 1
fi
echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null

#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# System packages for the Smart Sync drive and its tests: fuse3 (fusermount3, libfuse3),
# and what pip needs to build pyfuse3, which PyPI has as source only: libfuse3-dev,
# pkg-config, a C compiler and Python's headers. The server needs none of them.
#
#   deps-fuse.sh            install the packages that are missing (root on Debian; make
#                           deps runs every scripts/deps-*.sh like this)
#   deps-fuse.sh --check    install nothing; print what the drive lacks here, one per
#                           line; exit 1 when pyfuse3 cannot be built
#   deps-fuse.sh --prepare  for make install: as root, install what is missing; then
#                           print "drive" when the drive extra can be installed, nothing
#                           when it cannot (with CI set, that is an error: exit 1)
#   deps-fuse.sh --warn     for make install: say loudly what the drive lacks, if anything
#
# PYTHON (default python3) is the Python that pyfuse3 is built for.
set -euo pipefail
# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

PACKAGES=(fuse3 libfuse3-dev pkg-config gcc python3-dev)
PYTHON=${PYTHON:-python3}

check() {
  local buildable=0
  command -v fusermount3 >/dev/null || echo "fusermount3, to mount (Debian: fuse3)"
  if ! pkg-config --exists fuse3 2>/dev/null; then
    echo "libfuse3's headers, found through pkg-config (Debian: libfuse3-dev pkg-config)"
    buildable=1
  fi
  if ! command -v gcc >/dev/null && ! command -v cc >/dev/null; then
    echo "a C compiler (Debian: gcc)"
    buildable=1
  fi
  if ! "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    2>/dev/null; then
    echo "Python.h for $PYTHON (Debian: python3-dev)"
    buildable=1
  fi
  return $buildable
}

prepare() {
  if [[ -n $(check) && $(id -u) -eq 0 ]]; then
    # stdout is the answer. A failed apt-get (said on stderr) does not stop `make run`:
    # the server needs no FUSE. In CI, the check below fails then.
    apt_install_missing deps-fuse "${PACKAGES[@]}" >&2 || true
  fi
  if check >/dev/null; then
    echo drive
  elif [[ -n ${CI:-} ]]; then
    echo "deps-fuse: failing: CI is set, so the drive and its tests must be installed; missing:" >&2
    check >&2 || true
    exit 1
  fi
}

warn() {
  local missing line buildable=1
  missing=$(check) || buildable=0
  [[ -n $missing ]] || return 0
  {
    echo "*** The Smart Sync drive (anysync drive) and its tests need what this machine lacks:"
    while IFS= read -r line; do echo "***   $line"; done <<<"$missing"
    ((buildable)) || echo "*** so the drive is NOT installed (the drive extra: pyfuse3, trio)."
    echo "*** Install them: sudo apt-get install ${PACKAGES[*]}; then make install again."
    echo "*** (The server does not need them.)"
  } >&2
}

case ${1:-} in
  --check) check ;;
  --prepare) prepare ;;
  --warn) warn ;;
  "") apt_install_missing deps-fuse "${PACKAGES[@]}" || deps_stop deps-fuse $? ;;
  *)
    echo "usage: $0 [--check | --prepare | --warn]" >&2
    exit 2
    ;;
esac

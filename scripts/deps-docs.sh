#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# System packages for the man page test (make deps runs every scripts/deps-*.sh): man and
# groff, which render man/*.1 the way a user's `man` does.
set -euo pipefail
# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

apt_install_missing deps-docs man-db groff-base || deps_stop deps-docs $?

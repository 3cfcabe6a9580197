#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# System packages for the keyring tests (make deps runs every scripts/deps-*.sh): a real
# Secret Service, gnome-keyring-daemon, on a private D-Bus session bus (dbus-daemon),
# which tests/integration/keyring_service.py starts headless. The client itself needs
# neither: it talks to whatever Secret Service the desktop runs, through `keyring`.
set -euo pipefail
# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"

apt_install_missing deps-keyring gnome-keyring dbus-daemon || deps_stop deps-keyring $?

# shellcheck shell=bash
# Sourced by scripts/deps-*.sh (bash).
#
#   apt_install_missing NAME PACKAGE...
#
# Installs the Debian packages that are not installed yet. Returns 1 (and says so)
# when not root or not on Debian/Ubuntu, so that the caller can skip what follows.

apt_install_missing() {
  local name=$1 pkg
  shift
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    echo "$name: not root on Debian; skipping (its tests will skip, or fail when CI is set)" >&2
    return 1
  fi
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' \
      || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "$name: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

# Foreign-architecture binaries run through binfmt_misc, which machines without systemd
# do not mount at boot; qemu-user-static registers its handlers with the F flag.
enable_binfmt() {
  if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
  fi
  if [[ -e /proc/sys/fs/binfmt_misc/register ]] \
    && [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 || ! -e /proc/sys/fs/binfmt_misc/qemu-arm ]]; then
    update-binfmts --enable >/dev/null 2>&1 || true
  fi
}

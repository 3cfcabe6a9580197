#!/usr/bin/env bash
# Assemble a bootable Raspberry Pi disk image from a root file system, without loop
# partitions, device-mapper or mounting anything (none of which every build machine
# has): the FAT boot partition is filled with mtools, the ext4 root with
# `mkfs.ext4 -d`, and both are placed into the partitioned image with dd.
#
#   image-build/mkimage.sh ROOTFS OUT.img
#
# Layout (as Debian's raspi images): MBR; p1 FAT32 "RASPIFIRM" (ROOTFS/boot/firmware)
# from 4 MiB, 256 MiB; p2 ext4 "RASPIROOT" (the rest of ROOTFS) sized to its content
# plus room, grown to fill the SD card on first boot.
set -euo pipefail

rootfs=${1:?usage: mkimage.sh ROOTFS OUT.img}
out=${2:?usage: mkimage.sh ROOTFS OUT.img}
boot_mib=256
boot_start_mib=4
root_start_mib=$((boot_start_mib + boot_mib))
# Free space on the root file system before first boot expands it.
headroom_mib=${ANYSYNC_IMAGE_HEADROOM_MIB:-512}

work=$(mktemp -d "${out}.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The boot partition: every file of /boot/firmware, copied with mtools.
mkfs.vfat -C -F 32 -n RASPIFIRM "$work/boot.vfat" $((boot_mib * 1024)) >/dev/null
mcopy -i "$work/boot.vfat" -s -p -Q "$rootfs"/boot/firmware/* ::/

# The root file system without /boot/firmware's content (its mount point stays).
used_mib=$(du -sm --exclude=./boot/firmware "$rootfs" | cut -f1)
root_mib=$(((used_mib * 115 / 100) + headroom_mib))
truncate -s "${root_mib}M" "$work/root.ext4"
mkdir -p "$work/empty"
# -d copies the tree with owners and modes; the firmware files go to p1 only.
mv "$rootfs/boot/firmware" "$work/firmware"
restore() { mv "$work/firmware" "$rootfs/boot/firmware"; }
trap 'restore; rm -rf "$work"' EXIT
mkdir "$rootfs/boot/firmware"
mkfs.ext4 -q -F -L RASPIROOT -E root_owner=0:0 -d "$rootfs" "$work/root.ext4"
rmdir "$rootfs/boot/firmware"
restore
trap 'rm -rf "$work"' EXIT

total_mib=$((root_start_mib + root_mib))
rm -f "$out"
truncate -s "${total_mib}M" "$out"
# MBR: p1 FAT32 (LBA), p2 Linux to the end of the image.
sfdisk --quiet "$out" <<TABLE
label: dos
start=${boot_start_mib}MiB, size=${boot_mib}MiB, type=c
start=${root_start_mib}MiB, type=83
TABLE
dd if="$work/boot.vfat" of="$out" bs=1M seek="$boot_start_mib" conv=notrunc,sparse status=none
dd if="$work/root.ext4" of="$out" bs=1M seek="$root_start_mib" conv=notrunc,sparse status=none
echo "mkimage: $out: ${total_mib} MiB (boot ${boot_mib} MiB, root ${root_mib} MiB)" >&2

#!/bin/bash
# image/build.sh [OUT] -- build the appliance image from Debian 12 packages and this source tree.
#
#   OUT/wheels/        the project's wheel and its dependencies' (versions pinned to .venv's)
#   OUT/rootfs/        the root file system (mmdebstrap, root mode)
#   OUT/rootfs.ext4    the same as an ext4 file system image (mke2fs -d; keeps file capabilities)
#   OUT/disk.img       a bootable UEFI disk: GPT, ESP (systemd-boot, kernel, initrd), rootfs.ext4 as
#                      the root partition; serial console ttyS0 at 115200 (OUT/disk.qcow2 if qemu-img)
#   OUT/manifest.txt   every Debian package and version; OUT/wheels.sha256
#   OUT/build.env      what was built how (suite, SOURCE_DATE_EPOCH, durations, sizes)
#
# OUT defaults to $IMAGE_OUT, else /var/tmp/appliance-image. Needs root. Packages come from this
# machine's configured Debian source ($IMAGE_APT_SOURCES, default /etc/apt/sources.list.d/debian.sources,
# passed to mmdebstrap as its MIRROR), Python wheels from PyPI (pip's cache is used). Each run
# rebuilds OUT from scratch; every step has a time limit. What the disk image does not do yet (BIOS
# boot, growing the root partition, VMDK/OVA): image/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
OUT=${1:-${IMAGE_OUT:-/var/tmp/appliance-image}}
SUITE=bookworm
SOURCES=${IMAGE_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
PYTHON=${IMAGE_PYTHON:-$REPO/.venv/bin/python}
SSHD_CONF=$HERE/sshd/50-appliance.conf
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 1735689600)}
APT_TIMEOUT_S=600
PIP_TIMEOUT_S=600
MMDEBSTRAP_TIMEOUT_S=1200
MKFS_TIMEOUT_S=600

say() { printf 'build: %s\n' "$*"; }
die() { printf 'build: error: %s\n' "$*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# Mounts a killed mmdebstrap (or a test) may have left under OUT: deepest first.
unmount_under() {
    local base=$1 target
    [ -d "$base" ] || return 0
    base=$(realpath "$base")
    findmnt -rn -o TARGET | awk -v b="$base/" 'index($0, b) == 1' | sort -r | while read -r target; do
        umount "$target" 2>/dev/null || umount --lazy "$target"
    done
}

[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap --mode=root, chroot, mke2fs -d of a root-owned tree)"
[ -f "$SOURCES" ] || die "no Debian sources file $SOURCES (set IMAGE_APT_SOURCES to a sources.list or deb822 file)"
[ -x "$PYTHON" ] || die "no Python at $PYTHON (run scripts/setup.sh first, or set IMAGE_PYTHON)"
[ -f "$SSHD_CONF" ] || die "missing $SSHD_CONF"
if ! command -v mmdebstrap >/dev/null; then
    say "installing mmdebstrap"
    timeout "$APT_TIMEOUT_S" apt-get install -y -qq mmdebstrap >/dev/null || die "cannot install mmdebstrap"
fi
command -v mke2fs >/dev/null || die "mke2fs (e2fsprogs) is missing"
for pair in mkfs.vfat:dosfstools mcopy:mtools sfdisk:fdisk; do
    if ! command -v "${pair%%:*}" >/dev/null; then
        say "installing ${pair#*:}"
        timeout "$APT_TIMEOUT_S" apt-get install -y -qq "${pair#*:}" >/dev/null || die "cannot install ${pair#*:}"
    fi
done

mkdir -p "$OUT"
OUT=$(realpath "$OUT")
trap 'unmount_under "$OUT"' EXIT
unmount_under "$OUT"
rm -rf --one-file-system "$OUT/rootfs" "$OUT/rootfs.new" "$OUT/src" "$OUT/wheels" "$OUT/rootfs.ext4" \
    "$OUT/rootfs.ext4.new" "$OUT/esp.img" "$OUT/disk.img" "$OUT/disk.img.new" "$OUT/disk.qcow2" "$OUT/build.env"
started=$(now_ms)

# --- 1. wheels ---------------------------------------------------------------------------------------
# Built from a copy of the package sources, so the build leaves nothing (build/, egg-info) in the tree.
# Dependencies are pinned to the versions installed in the development venv (what the tests ran).
say "wheels (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
mkdir -p "$OUT/src" "$OUT/wheels"
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/appliance" "$REPO/commands" "$OUT/src/"
find "$OUT/src" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m pip freeze --exclude-editable --disable-pip-version-check > "$OUT/constraints.txt"
timeout "$PIP_TIMEOUT_S" "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-input \
    -c "$OUT/constraints.txt" -w "$OUT/wheels" "$OUT/src"
(cd "$OUT/wheels" && sha256sum -- *.whl) > "$OUT/wheels.sha256"
wheels_done=$(now_ms)

# --- 2. root file system ---------------------------------------------------------------------------
say "root file system (mmdebstrap $SUITE from $SOURCES)"
packages=$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HERE/packages.txt" | grep -v '^$' | paste -sd, -)
hooks=()
for hook in "$HERE"/hooks/customize*; do
    [ -x "$hook" ] || die "$hook is not executable"
    hooks+=("--customize-hook=$hook")
done
# A clean environment: nothing of the caller's (PIP_*, PYTHON*, locale) reaches the hooks or the chroot.
timeout --kill-after=30 "$MMDEBSTRAP_TIMEOUT_S" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" IMAGE_WHEELS="$OUT/wheels" IMAGE_SSHD_CONF="$SSHD_CONF" \
    IMAGE_OVERLAY="$HERE/overlay" \
    mmdebstrap --quiet --mode=root --variant=minbase \
    --format=directory --include="$packages" \
    --customize-hook="sync-in $HERE/overlay /" \
    "${hooks[@]}" \
    "$SUITE" "$OUT/rootfs.new" "$SOURCES"
unmount_under "$OUT/rootfs.new"
mv "$OUT/rootfs.new" "$OUT/rootfs"
dpkg-query --admindir="$OUT/rootfs/var/lib/dpkg" -W -f '${Package}\t${Version}\t${Architecture}\n' \
    > "$OUT/manifest.txt"
rootfs_done=$(now_ms)

# --- 3. ext4 image -----------------------------------------------------------------------------------
say "ext4 image"
used_mb=$(du -sm --apparent-size "$OUT/rootfs" | cut -f1)
size_mb=$(( used_mb * 13 / 10 + 512 ))
# Identifiers derived from SOURCE_DATE_EPOCH: the same source gives the same image.
stable_uuid() { "$PYTHON" -I -c 'import sys, uuid; print(uuid.uuid5(uuid.NAMESPACE_URL, sys.argv[1]))' "$1/$SOURCE_DATE_EPOCH"; }
fs_uuid=$(stable_uuid appliance-root)
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH timeout "$MKFS_TIMEOUT_S" mke2fs -q -F -t ext4 -L appliance-root \
    -U "$fs_uuid" -E "root_owner=0:0,hash_seed=$fs_uuid" -d "$OUT/rootfs" "$OUT/rootfs.ext4.new" "${size_mb}M"
mv "$OUT/rootfs.ext4.new" "$OUT/rootfs.ext4"
ext4_done=$(now_ms)

# --- 4. bootable disk image ---------------------------------------------------------------------------
# Assembled without loop devices (no partition scanning on the build machines): an ESP made with
# mkfs.vfat -C and mtools, a GPT written by sfdisk into a sparse file, both file systems copied in at
# their offsets. UEFI only: systemd-boot as the removable-media loader (EFI/BOOT/BOOTX64.EFI), no menu.
say "disk image"
ESP_MB=128
CMDLINE="root=LABEL=appliance-root rw console=tty0 console=ttyS0,115200n8"
kernel=$(find "$OUT/rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
[ -n "$kernel" ] || die "no kernel in $OUT/rootfs/boot (linux-image-cloud-amd64 in packages.txt)"
initrd="$OUT/rootfs/boot/initrd.img-${kernel##*/vmlinuz-}"
loader="$OUT/rootfs/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
[ -f "$initrd" ] || die "no initrd for $kernel"
[ -f "$loader" ] || die "no $loader (systemd-boot-efi in packages.txt)"
export MTOOLS_SKIP_CHECK=1
esp="$OUT/esp.img"
vol_id=$(stable_uuid esp | tr -d - | cut -c1-8)
timeout "$MKFS_TIMEOUT_S" mkfs.vfat -F 32 -n ESP -i "$vol_id" --invariant -C "$esp" $(( ESP_MB * 1024 )) >/dev/null
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
mcopy -i "$esp" "$loader" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$esp" "$kernel" ::/vmlinuz
mcopy -i "$esp" "$initrd" ::/initrd.img
# editor no: the kernel command line cannot be edited at the console (no init=/bin/sh); the menu
# (a key held at boot) offers the one entry and the firmware, nothing else.
printf 'default appliance.conf\ntimeout 0\nconsole-mode keep\neditor no\nauto-entries no\n' \
    | mcopy -i "$esp" - ::/loader/loader.conf
printf 'title Appliance (Debian 12)\nlinux /vmlinuz\ninitrd /initrd.img\noptions %s\n' "$CMDLINE" \
    | mcopy -i "$esp" - ::/loader/entries/appliance.conf
disk="$OUT/disk.img.new"
total_mb=$(( 1 + ESP_MB + size_mb + 1 ))
truncate -s "${total_mb}M" "$disk"
timeout 60 sfdisk --quiet --no-reread --no-tell-kernel "$disk" <<SFDISK
label: gpt
label-id: $(stable_uuid disk)
unit: sectors
first-lba: 2048
start=2048, size=$(( ESP_MB * 2048 )), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$(stable_uuid esp-part), name="esp"
start=$(( (1 + ESP_MB) * 2048 )), size=$(( size_mb * 2048 )), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$(stable_uuid root-part), name="appliance-root"
SFDISK
dd if="$esp" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$OUT/rootfs.ext4" of="$disk" bs=1M seek=$(( 1 + ESP_MB )) conv=notrunc,sparse status=none
mv "$disk" "$OUT/disk.img"
rm -f "$esp"
if command -v qemu-img >/dev/null; then
    timeout "$MKFS_TIMEOUT_S" qemu-img convert -O qcow2 "$OUT/disk.img" "$OUT/disk.qcow2"
fi
disk_done=$(now_ms)

cat > "$OUT/build.env" <<ENV
SUITE=$SUITE
SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH
ROOTFS_MB=$used_mb
EXT4_MB=$size_mb
EXT4_UUID=$fs_uuid
WHEELS_S=$(( (wheels_done - started) / 1000 ))
ROOTFS_S=$(( (rootfs_done - wheels_done) / 1000 ))
EXT4_S=$(( (ext4_done - rootfs_done) / 1000 ))
DISK_S=$(( (disk_done - ext4_done) / 1000 ))
DISK_MB=$total_mb
KERNEL=${kernel##*/}
CMDLINE="$CMDLINE"
TOTAL_S=$(( (disk_done - started) / 1000 ))
ENV
say "done in $(( (disk_done - started) / 1000 )) s: $OUT/rootfs ($used_mb MB), rootfs.ext4 (${size_mb} MB), disk.img (${total_mb} MB)"

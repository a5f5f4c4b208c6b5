#!/usr/bin/env bash
# debian-root.sh DEST KERNEL-DIR: a Debian 12 root file system with Debian's own
# initramfs, for the tests that boot Debian's stock cloud kernel on it
# (tests/image/kernels.sh, docs/virtio.md#debians-kernel). KERNEL-DIR is where
# scripts/distro-kernel.sh staged that kernel (its `version` file names the package).
#
#   1. `debootstrap --variant=minbase` bookworm, with initramfs-tools (and udev, which it
#      needs), iproute2 and iputils-ping, from the Debian mirror of the host's apt sources;
#   2. the same kernel package (`apt-get download`ed) installed in it with `dpkg -i`:
#      Debian's own postinst hook (/etc/kernel/postinst.d/initramfs-tools) runs
#      update-initramfs, which makes /boot/initrd.img-VERSION with Debian's tools;
#   3. our init, env/debian-init, as /sbin/yakvm-init (booted with init=/sbin/yakvm-init);
#   4. an ext4 image of it made with `mkfs.ext4 -d` (no loop mount).
#
# DEST gets root.ext4 and initrd.img (the one update-initramfs made) with a `version` line;
# the kernel to boot with them stays KERNEL-DIR/vmlinuz (the root's /boot/vmlinuz-VERSION is
# checked to be the same bytes). Built once (about a minute with a fast mirror; it needs
# root for debootstrap and the chroot) and cached in
# $YAKVM_CACHE/debian-root-<kernel version>-<hash of this script and env/debian-init>.
#
# A failure (no network, no root, a failed build) is the test's failure, not a skip: this
# script then leaves DEST/FETCH-FAILED with the reason (the test prints it and fails) and
# exits 1; `make env` goes on, so that the other tests still run.
set -uo pipefail
source "$(dirname "$0")/common.sh"

dest=${1:?usage: debian-root.sh DEST KERNEL-DIR}
kdir=${2:?usage: debian-root.sh DEST KERNEL-DIR}
rm -rf "$dest"
mkdir -p "$dest"
fail() { echo "$*" > "$dest/FETCH-FAILED"; log "Debian root: $*"; exit 1; }

[[ -f $kdir/version && -f $kdir/vmlinuz ]] ||
    fail "no Debian kernel in $kdir: $(cat "$kdir/FETCH-FAILED" 2>/dev/null || echo 'scripts/distro-kernel.sh did not run')"
read -r pkg version < "$kdir/version"
key=$(cat "$0" "$YAKVM_ROOT/env/debian-init" | sha256sum | cut -c1-12)
cache="$YAKVM_CACHE/debian-root-$pkg-$version-$key"
suite=bookworm
packages=initramfs-tools,udev,busybox,zstd,iproute2,iputils-ping,kmod,linux-base

# One build at a time (worktrees share the cache): a second `make env` waits for the first.
mkdir -p "$YAKVM_CACHE"
exec 9> "$YAKVM_CACHE/debian-root.lock"
flock 9
if [[ ! -f $cache/root.ext4 ]]; then
    ((EUID == 0)) || fail "building the Debian root needs root (debootstrap, chroot)"
    command -v debootstrap > /dev/null || fail "debootstrap is not installed (make deps)"
    command -v mkfs.ext4 > /dev/null || fail "mkfs.ext4 is not installed (e2fsprogs)"
    # The mirror: the first apt source that serves bookworm's main, else deb.debian.org.
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '
        /^URIs:/ { uri = $2 } /^Suites:/ { s = $0 }
        /^Components:/ && s ~ / bookworm( |$)/ && / main/ && uri != "" { print uri; exit }
        /^$/ { uri = ""; s = "" }')
    [[ -n $mirror ]] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" && / main/ { print $2; exit }' \
        /etc/apt/sources.list 2>/dev/null)
    mirror=${mirror:-http://deb.debian.org/debian}
    start=$(date +%s)
    work="$cache.tmp"
    root="$work/root"
    # Whatever is still mounted in the root (ours, or debootstrap's after a failure) is
    # unmounted first; --one-file-system keeps rm out of anything that stayed mounted.
    cleanup() {
        local m
        for m in $(awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
            umount -l "$m" 2>/dev/null
        done
        # The logs of a failed build stay beside FETCH-FAILED.
        [[ -f $dest/FETCH-FAILED ]] && cp "$work"/*.log "$dest/" 2>/dev/null
        rm -rf --one-file-system "$work"
    }
    trap cleanup EXIT
    rm -rf "$work" && mkdir -p "$work"
    log "Debian root: debootstrap --variant=minbase $suite from $mirror (a few minutes)"
    debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" > "$work/debootstrap.log" 2>&1 ||
        fail "debootstrap failed: $(grep -E 'E:|W:' "$work/debootstrap.log" | tail -n 3 | tr '\n' ' ')$(tail -n 2 "$work/debootstrap.log" | tr '\n' ' ')"
    log "Debian root: debootstrap done in $(( $(date +%s) - start )) s; fetching $pkg $version"
    (cd "$work" && apt-get download -q "$pkg=$version" > fetch.log 2>&1) ||
        fail "apt-get download $pkg=$version failed: $(tail -n 3 "$work/fetch.log" | tr '\n' ' ')"
    deb=$(ls "$work"/*.deb | head -n 1)
    cp "$deb" "$root/tmp/kernel.deb"
    # No service starts in the chroot; the kernel's filesystems for the hooks.
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod +x "$root/usr/sbin/policy-rc.d"
    mounted=()
    for fs in proc sys dev; do
        mount --bind "/$fs" "$root/$fs" || fail "cannot bind-mount /$fs in the root"
        mounted+=("$root/$fs")
    done
    log "Debian root: dpkg -i $pkg $version in the root (its postinst runs update-initramfs)"
    chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        dpkg -i /tmp/kernel.deb > "$work/dpkg.log" 2>&1 ||
        fail "dpkg -i $pkg failed: $(tail -n 3 "$work/dpkg.log" | tr '\n' ' ')"
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[i]}" || fail "cannot unmount ${mounted[i]}"; done
    kver=$(ls "$root/lib/modules" | head -n 1)
    [[ -n $kver && -f $root/boot/initrd.img-$kver ]] ||
        fail "no /boot/initrd.img-$kver after dpkg -i (update-initramfs did not run: $(grep -i initramfs "$work/dpkg.log" | tail -n 2 | tr '\n' ' '))"
    grep -q "update-initramfs: Generating /boot/initrd.img-$kver" "$work/dpkg.log" ||
        fail "the kernel's postinst did not run update-initramfs: $(tail -n 3 "$work/dpkg.log" | tr '\n' ' ')"
    cmp -s "$root/boot/vmlinuz-$kver" "$kdir/vmlinuz" || fail "the root's /boot/vmlinuz-$kver is not $kdir/vmlinuz"
    rm -f "$root/usr/sbin/policy-rc.d" "$root/tmp/kernel.deb"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages
    install -m 0755 "$YAKVM_ROOT/env/debian-init" "$root/sbin/yakvm-init"
    echo debian > "$root/etc/hostname"
    printf '/dev/vda / ext4 ro 0 1\n' > "$root/etc/fstab"
    # The image: what the root holds plus a quarter, and 32 MiB for the file system's own.
    kib=$(du -sk "$root" | cut -f1)
    size=$(( (kib + kib / 4) / 1024 + 32 ))
    rm -f "$work/root.ext4"
    mkfs.ext4 -q -F -L debian-root -d "$root" "$work/root.ext4" "${size}M" > "$work/mkfs.log" 2>&1 ||
        fail "mkfs.ext4 -d failed: $(tail -n 3 "$work/mkfs.log" | tr '\n' ' ')"
    rm -rf "$cache" && mkdir -p "$cache"
    mv "$work/root.ext4" "$cache/root.ext4.tmp"
    cp "$root/boot/initrd.img-$kver" "$cache/initrd.img"
    echo "$pkg $version, $suite minbase root of $((kib / 1024)) MiB, initrd.img-$kver by update-initramfs $(chroot "$root" dpkg-query -W -f='${Version}' initramfs-tools)" > "$cache/version"
    mv "$cache/root.ext4.tmp" "$cache/root.ext4"
    log "Debian root: built in $(( $(date +%s) - start )) s"
fi
# The drive is booted read-only (readonly=on): hard links into the cache would do, but a
# copy keeps the cache safe from a test that writes.
cp --sparse=always "$cache/root.ext4" "$dest/" && cp "$cache/initrd.img" "$cache/version" "$dest/" ||
    fail "cannot stage $cache in $dest"
log "Debian root: $(cat "$dest/version"); root.ext4 $(( $(stat -c %s "$dest/root.ext4") >> 20 )) MiB, initrd.img $(( $(stat -c %s "$dest/initrd.img") >> 20 )) MiB"

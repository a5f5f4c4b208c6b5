#!/usr/bin/env bash
# Builds the ext4 root file system the `--drive` tests boot our Linux from: busybox
# (static) and env/disk-init as /sbin/init, in build/guest-root.ext4 (16 MiB), made with
# `mkfs.ext4 -d` (no mounting, no root needed).
set -euo pipefail
source "$(dirname "$0")/common.sh"

out="$BUILD_DIR/guest-root.ext4"
root="$BUILD_DIR/guest-root"
[[ -x /bin/busybox ]] || die "/bin/busybox is missing (run: make deps)"
command -v mkfs.ext4 > /dev/null || PATH=$PATH:/usr/sbin:/sbin
command -v mkfs.ext4 > /dev/null || die "mkfs.ext4 is missing (e2fsprogs)"
rm -rf "$root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,mnt,root}
cp /bin/busybox "$root/bin/busybox"
install -m 0755 "$YAKVM_ROOT/env/disk-init" "$root/sbin/init"
rm -f "$out.tmp"
# (-q still prints "Creating regular file": shown only if mkfs fails.)
msg=$(mkfs.ext4 -q -F -L yakvm-root -d "$root" "$out.tmp" 16M 2>&1) || die "mkfs.ext4: $msg"
mv "$out.tmp" "$out"
log "guest root disk: $out"

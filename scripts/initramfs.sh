#!/usr/bin/env bash
# Builds the image's root filesystem: busybox (static) and env/init, as a gzipped cpio.
set -euo pipefail
source "$(dirname "$0")/common.sh"

out="$BUILD_DIR/initramfs.cpio.gz"
root="$BUILD_DIR/initramfs"
[[ -x /bin/busybox ]] || die "/bin/busybox is missing (run: make deps)"
rm -rf "$root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt/shares,root}
cp /bin/busybox "$root/bin/busybox"
install -m 0755 "$YAKVM_ROOT/env/init" "$root/init"
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) > "$out.tmp"
mv "$out.tmp" "$out"
log "initramfs: $out"

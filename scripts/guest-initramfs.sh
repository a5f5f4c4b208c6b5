#!/usr/bin/env bash
# Builds the guest Linux's root filesystem: busybox (static), env/guest-init and
# env/guest-net (the network checks, as /bin/yakvm-net), yakvm-udprr (the UDP echo of
# the network benchmark), as a
# gzipped cpio in build/guest-initramfs.cpio.gz.
set -euo pipefail
source "$(dirname "$0")/common.sh"

out="$BUILD_DIR/guest-initramfs.cpio.gz"
root="$BUILD_DIR/guest-initramfs"
[[ -x /bin/busybox ]] || die "/bin/busybox is missing (run: make deps)"
rm -rf "$root"
mkdir -p "$root"/{bin,dev,proc,sys,root}
cp /bin/busybox "$root/bin/busybox"
install -m 0755 "$YAKVM_ROOT/env/guest-init" "$root/init"
install -m 0755 "$YAKVM_ROOT/env/guest-net" "$root/bin/yakvm-net"
udprr="$YAKVM_ROOT/target/x86_64-unknown-linux-gnu/release/yakvm-udprr"
[[ -x $udprr ]] || die "$udprr is missing (make emulator builds it)"
install -m 0755 -s "$udprr" "$root/bin/yakvm-udprr"  # stripped: the initramfs stays small
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) > "$out.tmp"
mv "$out.tmp" "$out"
log "guest initramfs: $out"

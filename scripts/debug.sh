#!/usr/bin/env bash
# `make debug`: boots the image stopped at the first instruction with QEMU's gdb stub on
# localhost:1234, and starts gdb on the kernel's vmlinux, connected to it. QEMU's console
# goes to build/debug-console.log (follow it with `tail -f` in another terminal).
# The module's symbols: once it is loaded in the image, in gdb run
#   lx-symbols /path/to/yakvm/kmod
# (the kernel's gdb scripts are loaded; they read the module's load address from the
# kernel) or by hand: add-symbol-file kmod/yakvm.ko <address of /sys/module/yakvm/sections/.text>
set -euo pipefail
source "$(dirname "$0")/common.sh"
kdir=$(kernel_dir)
mkdir -p "$BUILD_DIR"
GDB=1 CMD="${CMD:-}" "$(dirname "$0")/qemu.sh" > "$BUILD_DIR/debug-console.log" 2>&1 < /dev/null &
qemu=$!
trap 'kill $qemu 2>/dev/null' EXIT
sleep 1
log "console: $BUILD_DIR/debug-console.log; gdb: 'continue' to boot, 'lx-symbols $YAKVM_ROOT/kmod' after insmod"
gdb -q -iex "add-auto-load-safe-path $kdir" \
    -ex "target remote localhost:1234" \
    -ex "source $kdir/vmlinux-gdb.py" \
    "$kdir/vmlinux"

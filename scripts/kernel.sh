#!/usr/bin/env bash
# Build (or reuse) the environment kernel: Debian's linux-source-6.12 with
# env/kernel.config merged on top of tinyconfig. The build lives in the cache directory
# printed by `kernel_dir` (`build_kernel` in common.sh). Prints the kernel directory on
# stdout.
set -euo pipefail
source "$(dirname "$0")/common.sh"

kdir=$(kernel_dir)
if [[ -f $kdir/.yakvm-built ]]; then
    # The gdb helpers (lx-symbols) for `make debug`; quick, and missing from older caches.
    [[ -e $kdir/vmlinux-gdb.py ]] || make -C "$kdir" -s "${KMAKE_ARGS[@]}" scripts_gdb >/dev/null 2>&1 || true
    log "kernel: cached at $kdir"
    echo "$kdir"
    exit 0
fi

build_kernel kernel "$kdir" "$YAKVM_ROOT/env/kernel.config" bzImage modules scripts_gdb
echo "$kdir"

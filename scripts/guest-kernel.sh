#!/usr/bin/env bash
# Build (or reuse) the guest kernel that yakvm boots: Debian's linux-source-6.12 with
# env/guest-kernel.config merged on top of tinyconfig, bzImage only. Same toolchain as
# the environment kernel (KMAKE_ARGS: LLVM 19), in its own cache directory
# (`guest_kernel_dir`, `build_kernel` in common.sh). Prints the kernel directory on stdout.
set -euo pipefail
source "$(dirname "$0")/common.sh"

fragment="$YAKVM_ROOT/env/guest-kernel.config"
kdir=$(guest_kernel_dir)
if [[ -f $kdir/.yakvm-built ]]; then
    log "guest kernel: cached at $kdir"
    echo "$kdir"
    exit 0
fi

build_kernel "guest kernel" "$kdir" "$fragment" bzImage
log "guest kernel: bzImage $(stat -c %s "$kdir/arch/x86/boot/bzImage") bytes"
echo "$kdir"

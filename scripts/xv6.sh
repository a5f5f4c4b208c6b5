#!/usr/bin/env bash
# `make xv6`: MIT's xv6 (the x86 teaching OS, not part of yakvm) run on yakvm as a teacher
# would run it on QEMU (`-kernel kernelmemfs`, or the disk build on two IDE disks), in one
# boot of the image (tests/image/xv6.sh): with the kernel APIC (`--kernel-apic`) the
# kernelmemfs build and the disk build, each with one and two CPUs, and for comparison
# the kernelmemfs build on the emulator's APIC for 60 s; how far each run gets (booted,
# init started the shell, the shell answers, usertests ran, "ALL TESTS PASSED"), in how
# long, and the image's soft lockup and WARN/BUG reports. The source is a directory the
# user gives (XV6, default ../shared/xv6, holding xv6-public.tar.gz), built once into
# XV6_BUILD (default ~/.cache/yakvm-xv6) and staged into the image's share; never copied
# into the project.
#
#   scripts/xv6.sh                      each kernel-APIC run at most XV6_TIMEOUT (default 300) s
#   XV6_TIMEOUT=600 scripts/xv6.sh      more room for usertests
set -uo pipefail
source "$(dirname "$0")/common.sh"
cd "$YAKVM_ROOT"

XV6_TIMEOUT=${XV6_TIMEOUT:-300}
scripts/xv6-stage.sh || exit 1
log "xv6: four runs of at most $XV6_TIMEOUT s and one of 60 s in the image (log: $BUILD_DIR/xv6.log)"
mkdir -p "$BUILD_DIR"
CMD="XV6_TIMEOUT=$XV6_TIMEOUT sh tests/xv6.sh" QEMU_TIMEOUT=$((XV6_TIMEOUT * 4 + 60 + 600)) scripts/qemu.sh > "$BUILD_DIR/xv6.log" 2>&1
rc=$?
tr -d '\r' < "$BUILD_DIR/xv6.log" | grep '^xv6:' >&2
exit $rc

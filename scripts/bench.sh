#!/usr/bin/env bash
# `make bench`: yakvm against KVM in one boot of the image, on the same emulator and
# devices (bench/image.sh runs the workloads there), then the table (bench/report.py).
# A benchmark, not a test: it reports, it never fails on a figure.
set -uo pipefail
source "$(dirname "$0")/common.sh"
cd "$YAKVM_ROOT"
rm -f "$SHARES_DIR/out/bench.csv" "$SHARES_DIR/out/bench-vblk.csv"
log "bench: ${ROUNDS:-3} rounds of 13 workloads, the virtio disk's 9 rows and the network's 9, on yakvm and KVM (a round takes minutes here: measured 3.5 min for the disk rows, 4 for the network's)"
CMD="ROUNDS=${ROUNDS:-3} ONLY='${ONLY:-}' sh bench/image.sh" QEMU_TIMEOUT=3600 scripts/qemu.sh | tee "$BUILD_DIR/bench.log"
[[ -s $SHARES_DIR/out/bench.csv ]] || die "the image wrote no results (log: $BUILD_DIR/bench.log)"
cp "$SHARES_DIR/out/bench.csv" "$BUILD_DIR/bench-runs.csv"
rm -f "$BUILD_DIR/bench-vblk.csv"
[[ -s $SHARES_DIR/out/bench-vblk.csv ]] && cp "$SHARES_DIR/out/bench-vblk.csv" "$BUILD_DIR/bench-vblk.csv"
echo
python3 bench/report.py "$BUILD_DIR/bench-runs.csv" "$BUILD_DIR/bench.csv"

# Helpers for the tests that run inside the image. Each test prints one line:
# "PASS <name>" or "FAIL <name>: <why>"; the host driver counts them.
OUT=/mnt/shares/out
mkdir -p "$OUT"

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }

# check NAME COMMAND...: passes if COMMAND succeeds; its output is kept for the message.
check() {
    name=$1; shift
    if msg=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(echo "$msg" | tail -n 3 | tr '\n' ' ')"; fi
}

# The kernel log must have no warning, bug, oops or lockup report.
dmesg_clean() {
    bad=$(dmesg | grep -E 'WARNING:|BUG:|Oops|general protection|soft lockup|hard LOCKUP|Call Trace|kmemleak: [1-9]' | head -n 5)
    [ -z "$bad" ] || { echo "$bad"; return 1; }
}

# kvm_amd and yakvm both own EFER.SVME: one is unloaded before the other is loaded (the
# differential tests, `make bench`). Run from /mnt/shares.
use_kvm() { rmmod yakvm && insmod kvm/irqbypass.ko && insmod kvm/kvm.ko && insmod kvm/kvm-amd.ko; }
use_yakvm() { rmmod kvm_amd kvm irqbypass; insmod yakvm.ko; }

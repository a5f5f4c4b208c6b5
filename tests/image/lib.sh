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

# ioeventfd_results OUT ERR: what ioeventfd.bin printed (OUT) and what `yakvm run --stats
# --ioeventfd ...` said on stderr (the file ERR) show every matching write counted and none
# of them an exit to the emulator (emulator.sh, kvm.sh).
ioeventfd_results() {
    [ "$(echo "$1" | grep -c '^ok ')" -eq 4 ] || { echo "checks: $(echo "$1" | grep -v '^ok ' | head -n 3)"; return 1; }
    for want in 'pio:0x60: 1000' 'pio:0x10:1:0x23: 1000' 'mmio:0xc0000300: 1000' 'mmio:0xc00007f8:4:0xcafe: 1001'; do
        grep -q "^ioeventfd $want signals in [0-9]* wake-ups$" "$2" || { echo "no '$want': $(grep '^ioeventfd' "$2")"; return 1; }
    done
    # MMIO: the scratch register's 3 writes that do not match and its 4 reads. Port writes:
    # the console's bytes (no '#') and the exit port's, far fewer than the 2000 matching.
    line=$(grep '^exits handled by the emulator:' "$2")
    echo "$line" | grep -q ', mmio 7,' || { echo "$line"; return 1; }
    io=$(echo "$line" | sed -n 's/.*(io \([0-9]*\),.*/\1/p')
    [ -n "$io" ] && [ "$io" -lt 300 ] || { echo "$line"; return 1; }
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

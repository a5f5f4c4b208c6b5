# Tests of the module core (exit kinds, isolation), run inside the image by scripts/test.sh.
. /mnt/shares/tests/lib.sh
cd /mnt/shares

# cpu.bin checks CPUID, MSR emulation and #GP, and #UD for the SVM instructions itself;
# its output lists each check.
cpu_guest() {
    out=$(yakvm run guests/cpu.bin 2>&1); rc=$?
    echo "$out" > "$OUT/cpu.out"
    [ $rc -eq 0 ] || { echo "status $rc: $(echo "$out" | grep -v '^ok' | head -n 3)"; return 1; }
    [ "$(echo "$out" | grep -c '^ok ')" -eq 21 ] || { echo "expected 21 checks: $out"; return 1; }
}

check cpu_guest cpu_guest
check dmesg_clean_core dmesg_clean

# Tests of the module core (every exit kind, isolation), run inside the image by
# scripts/test.sh. Guests print "ok <check>" / "FAIL <check>" and exit 0 only if all passed.
. /mnt/shares/tests/lib.sh
cd /mnt/shares
# Figures go straight to the console (`check` keeps a test's own output for its message).
exec 3>&1

# guest_checks NAME N: runs guests/NAME.bin, which must pass its N checks.
guest_checks() {
    out=$(yakvm run "guests/$1.bin" 2>&1); rc=$?
    echo "$out" > "$OUT/$1.out"
    [ $rc -eq 0 ] || { echo "status $rc: $(echo "$out" | grep -v '^ok' | head -n 3)"; return 1; }
    n=$(echo "$out" | grep -c '^ok ')
    [ "$n" -eq "$2" ] || { echo "$n of $2 checks: $(echo "$out" | grep -v '^ok' | head -n 3)"; return 1; }
}

# CPUID, MSRs (#GP for VM_HSAVE_PA, VM_CR, EFER.SVME/LMSLE), #UD for VMRUN, VMLOAD,
# VMSAVE, CLGI, STGI, SKINIT, INVLPGA; UD2's #UD and theirs push RF; RDTSCP with the
# guest's TSC_AUX.
cpu_guest() { guest_checks cpu 36; }
# IN/OUT of 1, 2, 4 bytes, OUTS/INS with and without REP, DF=1, 5000-byte REP OUTSB.
# The exact output is compared on the host.
ports_guest() { yakvm run guests/ports.bin > "$OUT/ports.out"; }
# MMIO reads and writes of 1/2/4/8 bytes, MOV imm, MOVZX, MOVSX, high-byte registers.
mmio_guest() {
    guest_checks mmio 14 || return 1
    grep -q '^via mmio$' "$OUT/mmio.out" && grep -q '^4by$' "$OUT/mmio.out" || { echo "serial by MMIO missing"; return 1; }
}
hypercall_guest() { guest_checks hypercall 2; }
# Control registers and MSRs a guest must not load (CR4 reserved and unoffered bits, CR0
# and CR3 reserved bits and combinations, EFER.LME while paging) raise #GP instead of
# failing VMRUN; legal writes (CR4.SMAP, offered), CLTS and LMSW take effect; DR4 #UD with CR4.DE, DR7 bits
# 63:32 #GP; IA32_MISC_ENABLE as KVM has it.
ctlregs_guest() { guest_checks ctlregs 27; }

triple_fault() {
    msg=$(yakvm run guests/triple.bin 2>&1); rc=$?
    [ $rc -ne 0 ] || { echo "status 0"; return 1; }
    echo "$msg" | grep -q 'guest shut down (triple fault)' || { echo "message: $msg"; return 1; }
    echo "$msg" | grep -q 'still alive' && { echo "guest went on after the triple fault"; return 1; }
    yakvm run guests/hello.bin > /dev/null || { echo "the next guest failed"; return 1; }
}

# Ctrl-C of a guest that never exits on its own: RUN returns EINTR, the process dies.
ctrl_c_busy_guest() {
    yakvm run guests/spin.bin > "$OUT/spin.out" 2>&1 &
    pid=$!
    # Once the guest runs (it says so first; a busy machine may take a while to start
    # yakvm, and a shell's background job ignores SIGINT until yakvm catches it)...
    n=0; while [ $n -lt 600 ] && ! grep -q spinning "$OUT/spin.out" 2>/dev/null; do sleep 0.1; n=$((n + 1)); done
    sleep 1
    kill -0 $pid 2>/dev/null || { echo "spin guest ended by itself: $(cat "$OUT/spin.out")"; return 1; }
    kill -INT $pid
    for i in 1 2 3 4 5 6 7 8 9 10; do
        kill -0 $pid 2>/dev/null || break
        sleep 1
    done
    kill -0 $pid 2>/dev/null && { kill -9 $pid; echo "still running 10 s after SIGINT"; return 1; }
    wait $pid; rc=$?
    [ $rc -eq 130 ] || { echo "status $rc, expected 130 (SIGINT)"; return 1; }
}

# A guest whose exits are handled in the module (CPUID, MOV CR4, RDMSR/WRMSR), for 30 s:
# the module's loop lets the scheduler run, so the kernel's watchdog (a soft lockup is
# reported after 20 s without it) stays quiet; Ctrl-C still ends the run.
exit_storm_no_lockup() {
    before=$(dmesg | grep -c 'soft lockup')
    yakvm run guests/exitstorm.bin > "$OUT/exitstorm.out" 2>&1 &
    pid=$!
    n=0; while [ $n -lt 600 ] && ! grep -q 'exit storm' "$OUT/exitstorm.out" 2>/dev/null; do sleep 0.1; n=$((n + 1)); done
    grep -q 'exit storm' "$OUT/exitstorm.out" || { kill -9 $pid; wait $pid; echo "the guest did not start in 60 s: $(head -c 300 "$OUT/exitstorm.out")"; return 1; }
    sleep 30
    kill -0 $pid 2>/dev/null || { wait $pid; echo "the guest ended by itself (status $?): $(head -c 300 "$OUT/exitstorm.out")"; return 1; }
    kill -INT $pid
    n=0; while kill -0 $pid 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    if kill -0 $pid 2>/dev/null; then kill -9 $pid; wait $pid; echo "still running 10 s after SIGINT"; return 1; fi
    wait $pid; rc=$?
    [ $rc -eq 130 ] || { echo "status $rc, expected 130 (SIGINT)"; return 1; }
    after=$(dmesg | grep -c 'soft lockup')
    [ "$after" -eq "$before" ] || { echo "$(dmesg | grep 'soft lockup' | tail -n 1)"; return 1; }
    # It did run its exits: a dot per 10000 rounds of four.
    dots=$(grep -a -A1 '^exit storm$' "$OUT/exitstorm.out" | tail -n 1 | tr -cd . | wc -c)
    echo "  exitstorm: $dots x 40000 exits handled in the module in 30 s" >&3
    [ "$dots" -ge 2 ] || { echo "only $dots rounds of exits in 30 s: $(head -c 300 "$OUT/exitstorm.out")"; return 1; }
}

# The guest keeps values in all XMM registers across 2000 exits while host processes
# compute with floating point on both CPUs; both must get their own results.
sse_with_host_fpu() {
    fpu='BEGIN { s = 0; for (i = 1; i <= 300000; i++) s += 1 / (i * i); printf "%.6f\n", s }'
    awk "$fpu" > "$OUT/fpu1" & a=$!
    awk "$fpu" > "$OUT/fpu2" & b=$!
    for i in 1 2 3; do
        out=$(yakvm run guests/sse.bin | tail -n 1)
        [ "$out" = "sse ok" ] || { echo "run $i: $out"; wait; return 1; }
    done
    wait $a $b
    [ "$(cat "$OUT/fpu1")" = 1.644931 ] && [ "$(cat "$OUT/fpu2")" = 1.644931 ] || { echo "host awk got $(cat "$OUT/fpu1") $(cat "$OUT/fpu2")"; return 1; }
}

check cpu_guest cpu_guest
check ports_guest ports_guest
check mmio_guest mmio_guest
check hypercall_guest hypercall_guest
check ctlregs_guest ctlregs_guest
check triple_fault triple_fault
check ctrl_c_busy_guest ctrl_c_busy_guest
check exit_storm_no_lockup exit_storm_no_lockup
check sse_with_host_fpu sse_with_host_fpu
# Tests through the ioctls (region validation, two vCPUs at once, VMCB dump, counters,
# VMEXIT_INVALID, unknown exits, host interrupts): they print their own PASS/FAIL lines.
yakvm-selftest /mnt/shares/guests || true
check dmesg_clean_core dmesg_clean

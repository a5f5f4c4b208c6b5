# Tests of several vCPUs (`--smp N` on the pc machine: local APICs, the MP table, INIT and
# startup IPIs, IPIs, NMIs, APIC timers), run inside the image by scripts/test.sh:
# guests/smp.bin with 1, 2, 4 and 8 vCPUs, every line of its output checked, and once on
# KVM; the hostile SMP guests (an IPI storm, APs that never answer, an AP that sends INIT
# to the BSP), each within a time bound; the --smp values that are refused. The guests'
# own figures (lines that start with two spaces: the TSC's rate, times) are left out of
# the comparisons; the figures printed here start with two spaces too.
. /mnt/shares/tests/lib.sh
cd /mnt/shares
# Figures go straight to the console (`check` keeps a test's own output for its message).
exec 3>&1

# Hundredths of a second since boot (busybox date has no %N).
now_cs() { cut -d' ' -f1 /proc/uptime | tr -d .; }

# run_guest NAME SECS ARGS...: `yakvm run --timeout SECS ARGS` with stdin empty, and a
# SIGKILL 30 s later should the emulator itself hang. Output (CRs dropped) in
# $OUT/NAME.out, stderr in $OUT/NAME.err; sets rc (the status) and cs (the wall time, in
# hundredths of a second).
run_guest() {
    name=$1 secs=$2
    shift 2
    t0=$(now_cs)
    timeout -s KILL $((secs + 30)) yakvm run --timeout "$secs" "$@" > "$OUT/$name.raw" 2> "$OUT/$name.err" < /dev/null
    rc=$?
    cs=$(( $(now_cs) - t0 ))
    tr -d '\r' < "$OUT/$name.raw" > "$OUT/$name.out"
}

# s CS: hundredths of a second as seconds.
s() { printf '%d.%02d' $(($1 / 100)) $(($1 % 100)); }

# why NAME: the end of a run's output and its stderr, on one line (for a FAIL message).
why() { echo "$(grep -v '^  ' "$OUT/$1.out" | tail -n 3 | tr '\n' ' ')/ stderr: $(tail -n 2 "$OUT/$1.err" | tr '\n' ' ')"; }

# same_lines NAME EXPECTED: the run's output without its figures is EXPECTED, line for line.
same_lines() {
    printf '%s\n' "$2" > "$OUT/$1.want"
    grep -v '^  ' "$OUT/$1.out" > "$OUT/$1.got"
    cmp -s "$OUT/$1.want" "$OUT/$1.got" && return 0
    echo "output differs (- expected, + got): $(diff "$OUT/$1.want" "$OUT/$1.got" | grep '^[-+][^-+]' | head -n 4 | tr '\n' ' ')"
    return 1
}

# The first lines of every SMP guest with N vCPUs: what the MP table lists (APIC ids
# 0..N-1, the I/O APIC's id is N), then "cpu I online" for I in FROM..TO.
mp_line() {
    ids=0 i=1
    while [ $i -lt $1 ]; do ids="$ids $i"; i=$((i + 1)); done
    echo "mp table: $1 cpus (apic ids $ids), bsp 0, local apic at 0xfee00000, io apic $1 at 0xfec00000"
}
online() { i=$1; while [ $i -le $2 ]; do echo "cpu $i online"; i=$((i + 1)); done; }

# What smp.bin prints with N vCPUs (each count exact: see guest/src/bin/smp.rs).
expected_smp() {
    n=$1 each=$(($1 * ($1 - 1)))
    mp_line $n
    online 0 $((n - 1))
    echo "ipi ok: $each physical, $each all-but-self, $each logical"
    echo "nmi ok: 2 taken by each of $((n - 1)) aps"
    echo "apic timer ok: 20 periodic ticks and 1 one-shot on each of $n cpus"
    echo "lock xadd ok: $((n * 100000)) = $n cpus x 100000"
    echo "cpus ok: each ap started once, no stray interrupts"
    echo "smp ok"
}

# smp N [ARGS...]: smp.bin (with yakvm run's ARGS too) with N vCPUs passes every check,
# line for line. Its timing figures: every CPU reports how long its 20 periodic APIC timer
# ticks of 1 ms took, at most 10 s (the guest's own bound: ticks merge when a vCPU waits
# for a host CPU, which makes them later, never earlier). The lower bound is the guest's
# to check (an alarm on PIT channel 2 must have gone off by the 20th tick): its figures
# come from PIT channel 0 read now and then, which loses 55-ms turns when no CPU reads it
# for that long, so they may come out short.
smp() {
    n=$1
    shift
    case "$*" in *user-apic*) name=smp-$n-uapic ;; *kernel-apic*) name=smp-$n-kapic ;; *kvm*) name=smp-$n-kvm ;; *) name=smp-$n ;; esac
    run_guest "$name" 120 "$@" --machine pc --smp "$n" guests/smp.bin
    ticks=$(sed -n 's/^  cpu [0-7]: 20 apic timer ticks of 1 ms in \([0-9]*\) us$/\1/p' "$OUT/$name.out")
    echo "  smp.bin --smp $n${1:+ $*}: $(s $cs) s; 20 APIC timer ticks of 1 ms took $(echo $ticks | tr ' ' '/') us" >&3
    [ $rc -eq 0 ] || { echo "status $rc: $(why "$name")"; return 1; }
    same_lines "$name" "$(expected_smp $n)" || return 1
    [ "$(echo "$ticks" | grep -c .)" -eq "$n" ] || { echo "$n CPUs, timer figures for $(echo "$ticks" | grep -c .)"; return 1; }
    for us in $ticks; do
        [ "$us" -le 10000000 ] || { echo "20 ticks of 1 ms in $us us"; return 1; }
    done
}

# The IPI storm (see guests/smp_storm.bin): 3 APs fire IPIs for 2 s of the guest's time,
# then the BSP stops them and ends the run, status 0. Meanwhile the host runs a shell loop
# of 20000 iterations (at most 60 s), which must end: the host stays usable.
storm() {
    case "$*" in *user-apic*) name=smp_storm-uapic ;; *) name=smp_storm ;; esac
    t0=$(now_cs)
    timeout -s KILL 90 yakvm run --timeout 60 --stats "$@" --machine pc --smp 4 guests/smp_storm.bin > "$OUT/$name.raw" 2> "$OUT/$name.err" < /dev/null &
    pid=$!
    n=0; while [ $n -lt 600 ] && ! grep -q '^storm: ' "$OUT/$name.raw"; do sleep 0.1; n=$((n + 1)); done
    t1=$(now_cs)
    i=0; while [ $i -lt 20000 ]; do
        i=$((i + 1))
        [ $((i % 2000)) -ne 0 ] || [ $(( $(now_cs) - t1 )) -lt 6000 ] || break
    done
    busy=$(( $(now_cs) - t1 ))
    wait $pid; rc=$?
    cs=$(( $(now_cs) - t0 ))
    tr -d '\r' < "$OUT/$name.raw" > "$OUT/$name.out"
    echo "  smp_storm --smp 4${1:+ $*}: $(s $cs) s; $(sed -n 's/^  storm: //p' "$OUT/$name.out"); the host's loop ($i iterations) took $(s $busy) s meanwhile" >&3
    # A failure shows the guest's figures of each AP and each vCPU's counters (--stats).
    [ $rc -eq 0 ] || { grep '^  cpu' "$OUT/$name.out" >&3; sed 's/^/  /' "$OUT/$name.err" >&3; echo "status $rc: $(why $name)"; return 1; }
    same_lines $name "$(mp_line 4; online 0 3; echo 'storm: 3 aps fire IPIs for 2 s'
        echo 'storm ok: the aps stopped when told, every IPI taken at most once')" || return 1
    [ $i -eq 20000 ] || { echo "the host's loop did $i of 20000 iterations in 60 s"; return 1; }
}

# APs that never answer (see guests/smp_silent.bin): one sent into `cli; hlt`, one never
# given a SIPI. The BSP waits 3 s for each, says so, and ends the run with status 2; the
# run ends although those two vCPUs never will (bound: 30 s, the two waits and a boot
# under load).
silent() {
    run_guest smp_silent 60 --machine pc --smp 4 guests/smp_silent.bin
    echo "  smp_silent --smp 4: ended in $(s $cs) s (the BSP waits 3 s for each silent AP)" >&3
    [ $rc -eq 2 ] || { echo "status $rc (want 2): $(why smp_silent)"; return 1; }
    same_lines smp_silent "$(echo 'silent: cpu 2 is started into cli; hlt, cpu 3 gets no SIPI'; mp_line 4; online 0 1
        echo 'cpu 2 did not answer'; echo 'cpu 3 did not answer'; echo 'smp FAIL: 2 cpus did not answer')" || return 1
    [ $cs -le 3000 ] || { echo "the run took $(s $cs) s"; return 1; }
}

# An AP sends INIT to the BSP (see guests/smp_initbsp.bin): the BSP waits for a startup
# IPI, every AP halts with interrupts off: no vCPU can run again. The emulator ends the
# run at once with a message that says so and a non-zero status (not its --timeout, not
# a signal; the guest itself would give up after 10 s with a FAIL line). Bound: 30 s.
init_to_bsp() {
    run_guest smp_initbsp 60 --machine pc --smp 4 guests/smp_initbsp.bin
    msg=$(grep '^yakvm: ' "$OUT/smp_initbsp.err" | head -n 1)
    echo "  smp_initbsp --smp 4: ended in $(s $cs) s, status $rc: $msg" >&3
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $rc -lt 128 ] || { echo "status $rc: $(why smp_initbsp)"; return 1; }
    echo "$msg" | grep -q 'startup IPI' || { echo "no message naming the stall (vCPU 0 waits for a startup IPI): $(why smp_initbsp)"; return 1; }
    same_lines smp_initbsp "$(mp_line 4; online 0 3; echo 'initbsp: cpu 0 spins; cpu 1 sends it INIT'
        echo 'cpu 1 sent INIT to cpu 0')" || return 1
    [ $cs -le 3000 ] || { echo "the run took $(s $cs) s"; return 1; }
}

# A guest that never starts the APs and powers off (HLT with interrupts disabled) ends the
# run as a power-off, status 0: the APs waiting for a startup IPI do not keep it alive;
# and one that waits for an interrupt nothing can send ends with the error, not a hang.
aps_never_started() {
    out=$(printf h | timeout -s KILL 60 yakvm run --machine pc --user-apic --smp 2 guests/pc_hostile.bin 2>&1); rc=$?
    [ $rc -eq 0 ] && echo "$out" | grep -q 'halted with interrupts disabled' || { echo "power-off: status $rc: $out"; return 1; }
    out=$(printf i | timeout -s KILL 60 yakvm run --machine pc --user-apic --smp 2 --timeout 30 guests/pc_hostile.bin 2>&1); rc=$?
    [ $rc -eq 1 ] && echo "$out" | grep -q 'nothing can send' || { echo "wait: status $rc: $out"; return 1; }
}

# refused WHAT ARGS...: `yakvm run ARGS guests/smp.bin` fails at once, before the guest
# runs, with a message on stderr that mentions WHAT.
refused() {
    what=$1
    shift
    out=$(timeout -s KILL 30 yakvm run "$@" guests/smp.bin 2>&1 < /dev/null); rc=$?
    [ $rc -ne 0 ] && [ $rc -lt 124 ] || { echo "status $rc: $out"; return 1; }
    echo "$out" | grep -q -- "$what" || { echo "no message about '$what': $out"; return 1; }
    echo "$out" | grep -q 'online' && { echo "the guest ran: $out"; return 1; }
    return 0
}

# smp.bin on KVM (`--hypervisor kvm`: the same emulator, its APICs and MP table, over
# /dev/kvm without an in-kernel irqchip): the same lines. kvm_amd and yakvm both own
# EFER.SVME: one is unloaded before the other is loaded (lib.sh).
on_kvm() {
    use_kvm || { echo "kvm_amd did not load"; use_yakvm; return 1; }
    smp 4 --hypervisor kvm
    r=$?
    use_yakvm || { echo "yakvm.ko did not load again"; return 1; }
    return $r
}

# A minute of a busy guest (it never halts) under a 1 kHz local APIC timer: no soft lockup
# report in the image's kernel log (a vCPU thread must leave its CPU to the scheduler,
# whatever its guest does; issue 25 saw "BUG: soft lockup ... [yakvm]" with xv6).
no_soft_lockup() {
    before=$(dmesg | grep -c 'soft lockup')
    out=$(yakvm run --machine pc --timeout 150 guests/apic_timer_minute.bin 2>&1 < /dev/null); rc=$?
    [ $rc -eq 0 ] && echo "$out" | grep -qx 'apic_timer_minute: 60000 ticks' || { echo "status $rc: $out"; return 1; }
    after=$(dmesg | grep -c 'soft lockup')
    [ "$after" -eq "$before" ] || { echo "$((after - before)) soft lockup reports: $(dmesg | grep 'soft lockup' | tail -n 1)"; return 1; }
}

# The kernel APIC (`--kernel-apic`): apicread.bin makes 100000 CPUIDs, reads the APIC ID
# 100000 times through the xAPIC page, switches to x2APIC mode, checks its #GP rules and
# reads the APIC ID 100000 times through its MSR. The xAPIC reads take no exit at all (the
# vCPU's read page, vcpu/apic.rs): the module counts fewer than 250000 exits in all (the
# CPUIDs and the MSR reads are 200000 of them) and only the 100000 x2APIC reads as APIC
# reads; no read reaches the emulator (none forwarded, fewer than 200 exits to it in
# all). The guest's figures line gives its TSC cycles per CPUID, xAPIC read and x2APIC read.
apicread() {
    run_guest apicread 120 --machine pc --kernel-apic --stats guests/apicread.bin
    reads=$(sed -n 's/^kernel APIC: \([0-9]*\) reads.*/\1/p' "$OUT/apicread.err")
    fwd=$(sed -n 's/^kernel APIC: .* \([0-9]*\) forwarded by the emulator.*/\1/p' "$OUT/apicread.err")
    user=$(sed -n 's/^exits handled by the emulator: \([0-9]*\).*/\1/p' "$OUT/apicread.err")
    exits=$(sed -n 's/^exits: \([0-9]*\) in all.*/\1/p' "$OUT/apicread.err")
    echo "  apicread --kernel-apic: $(s $cs) s for 100000 xAPIC and 100000 x2APIC ID reads; $exits exits, $reads APIC reads in the module, $fwd forwarded, $user exits to the emulator;$(sed -n 's/^  apicread//p' "$OUT/apicread.out")" >&3
    [ $rc -eq 0 ] || { echo "status $rc: $(why apicread)"; return 1; }
    same_lines apicread "$(echo 'apicread: x2apic offered, apic base 0xfee00900'
        echo 'apicread: 100000 xapic id reads, id 0'
        echo 'apicread: x2apic on, apic base 0xfee00d00, id 0, ldr 0x1'
        echo 'apicread ok: 100000 x2apic id reads')" || return 1
    [ -n "$exits" ] && [ "$exits" -lt 250000 ] || { echo "${exits:-no} exits counted by the module (want fewer than 250000: the xAPIC reads must not exit)"; return 1; }
    [ -n "$reads" ] && [ "$reads" -ge 100000 ] && [ "$reads" -lt 150000 ] || { echo "the module counted ${reads:-no} APIC reads (want the 100000 x2APIC reads)"; return 1; }
    # By register (the most accessed first): the ID, 100000 times through the MSR.
    ids=$(sed -n 's/^kernel APIC registers: ID \([0-9]*\).*/\1/p' "$OUT/apicread.err")
    [ -n "$ids" ] && [ "$ids" -ge 100000 ] || { echo "registers: $(grep '^kernel APIC registers' "$OUT/apicread.err")"; return 1; }
    [ -n "$fwd" ] && [ "$fwd" -lt 10 ] || { echo "${fwd:-?} xAPIC accesses forwarded by the emulator"; return 1; }
    [ -n "$user" ] && [ "$user" -lt 200 ] || { echo "${user:-?} exits reached the emulator"; return 1; }
}

# IRQFD (--kernel-apic): a host thread signals an eventfd bound to the message "vector
# 0x2a to APIC 0" 10000 times, each once the guest counted the interrupt before (so none
# merge); the module delivers each from its eventfd wake-up (guests/irqfd.bin counts them)
# with no exit to the emulator; with --user-apic --irqfd is refused.
irqfd() {
    run_guest irqfd 120 --machine pc --kernel-apic --stats --irqfd 0x2a:10000:0x200000 guests/irqfd.bin
    user=$(sed -n 's/^exits handled by the emulator: \([0-9]*\).*/\1/p' "$OUT/irqfd.err")
    echo "  irqfd --kernel-apic: $(s $cs) s for 10000 eventfd signals, each an interrupt; ${user:-?} exits to the emulator" >&3
    [ $rc -eq 0 ] || { echo "status $rc: $(why irqfd)"; return 1; }
    same_lines irqfd 'irqfd: 10000 interrupts' || return 1
    grep -qx 'irqfd: 10000 signals sent, the guest counted 10000' "$OUT/irqfd.err" || { echo "$(grep '^irqfd' "$OUT/irqfd.err")"; return 1; }
    [ -n "$user" ] && [ "$user" -lt 200 ] || { echo "${user:-?} exits reached the emulator"; return 1; }
    out=$(timeout -s KILL 30 yakvm run --machine pc --user-apic --irqfd 0x2a:1:0x200000 guests/irqfd.bin 2>&1 < /dev/null); rc=$?
    [ $rc -ne 0 ] && [ $rc -lt 124 ] && echo "$out" | grep -q 'irqfd' || { echo "--user-apic: status $rc: $out"; return 1; }
}

# A hostile guest on 8 vCPUs with the kernel APIC (see guests/apic_hostile.bin): an IPI
# storm, timers at their fastest, CPUs that never EOI, random writes to every APIC register;
# meanwhile the host runs a shell loop of 20000 iterations (at most 60 s), which must end;
# the guest ends the run itself after 3 s of its time (the kernel log is checked at the end
# of the boot, dmesg_clean).
apic_hostile() {
    name=apic_hostile
    t0=$(now_cs)
    timeout -s KILL 120 yakvm run --timeout 90 --machine pc --smp 8 --kernel-apic --stats guests/apic_hostile.bin > "$OUT/$name.raw" 2> "$OUT/$name.err" < /dev/null &
    pid=$!
    n=0; while [ $n -lt 600 ] && ! grep -q '^apic_hostile: ' "$OUT/$name.raw"; do sleep 0.1; n=$((n + 1)); done
    t1=$(now_cs)
    i=0; while [ $i -lt 20000 ]; do
        i=$((i + 1))
        [ $((i % 2000)) -ne 0 ] || [ $(( $(now_cs) - t1 )) -lt 6000 ] || break
    done
    busy=$(( $(now_cs) - t1 ))
    wait $pid; rc=$?
    cs=$(( $(now_cs) - t0 ))
    tr -d '\r' < "$OUT/$name.raw" > "$OUT/$name.out"
    echo "  apic_hostile --smp 8 --kernel-apic: $(s $cs) s; the host's loop ($i iterations) took $(s $busy) s meanwhile; $(grep -c '^  kernel APIC' "$OUT/$name.err") vCPUs report kernel APIC counters" >&3
    [ $rc -eq 0 ] || { echo "status $rc: $(why $name)"; return 1; }
    same_lines $name "$(mp_line 8; online 0 7; echo 'apic_hostile: 8 cpus for 3 s'; echo 'apic_hostile: done')" || return 1
    [ $i -eq 20000 ] || { echo "the host's loop did $i of 20000 iterations in 60 s"; return 1; }
}

# The kernel APIC: APs that wait for their startup IPI in RUN do not keep a guest that
# powered off (HLT with interrupts disabled on the BSP) alive; a guest that waits with
# interrupts enabled for an interrupt nothing can send ends with the error, not a hang
# (the module reports a HLT with no APIC timer armed, exit HLT; the emulator sees that
# nothing else can wake it either).
aps_never_started_kernel_apic() {
    out=$(printf h | timeout -s KILL 60 yakvm run --machine pc --smp 2 --kernel-apic --timeout 30 guests/pc_hostile.bin 2>&1); rc=$?
    [ $rc -eq 0 ] && echo "$out" | grep -q 'halted with interrupts disabled' || { echo "power-off: status $rc: $out"; return 1; }
    for n in 1 2; do
        out=$(printf i | timeout -s KILL 60 yakvm run --machine pc --smp $n --kernel-apic --timeout 30 guests/pc_hostile.bin 2>&1); rc=$?
        [ $rc -eq 1 ] && echo "$out" | grep -q 'nothing can send' || { echo "wait, $n vCPUs: status $rc: $out"; return 1; }
    done
}

# smp.bin in x2APIC mode (guests/smp_x2apic.bin, the kernel APIC): the same lines; each
# CPU touches the xAPIC page only to read its ID before it switches (at most 9 accesses
# forwarded by the emulator per vCPU), the rest goes through the MSRs to the module.
smp_x2apic() {
    n=$1
    name=smp-$n-x2apic
    run_guest "$name" 120 --kernel-apic --stats --machine pc --smp "$n" guests/smp_x2apic.bin
    fwd=$(sed -n 's/.*kernel APIC: .* \([0-9]*\) forwarded by the emulator.*/\1/p' "$OUT/$name.err" | tr '\n' ' ')
    echo "  smp_x2apic.bin --smp $n --kernel-apic: $(s $cs) s; xAPIC accesses forwarded per vCPU: $fwd" >&3
    [ $rc -eq 0 ] || { echo "status $rc: $(why "$name")"; return 1; }
    same_lines "$name" "$(expected_smp $n)" || return 1
    [ "$(echo $fwd | wc -w)" -eq "$n" ] || { echo "kernel APIC counters for $(echo $fwd | wc -w) of $n vCPUs"; return 1; }
    for f in $fwd; do
        [ "$f" -le 9 ] || { echo "$f xAPIC accesses forwarded on one vCPU: not in x2APIC mode"; return 1; }
    done
}

# The kernel APIC's TSC-deadline timer (guests/tsc_deadline.bin): 300 deadlines each fire
# once and never before the guest's TSC reached them, the MSR reads 0 outside the mode and
# after firing, 0 and a mode change disarm it; with the emulator's APIC (--user-apic) the
# mode is not offered (status 2).
tsc_deadline() {
    run_guest tsc-deadline 120 --machine pc --kernel-apic --stats guests/tsc_deadline.bin
    echo "  tsc_deadline --kernel-apic: $(s $cs) s; $(grep '^tsc_deadline' "$OUT/tsc-deadline.out")" >&3
    [ $rc -eq 0 ] || { echo "status $rc: $(why tsc-deadline)"; return 1; }
    grep -q '^tsc_deadline: 300 deadlines each fired once and none early' "$OUT/tsc-deadline.out" || { echo "$(why tsc-deadline)"; return 1; }
    n=$(sed -n 's/^kernel APIC registers: .*TSC_DEADLINE \([0-9]*\).*/\1/p' "$OUT/tsc-deadline.err")
    [ -n "$n" ] && [ "$n" -ge 300 ] || { echo "IA32_TSC_DEADLINE accesses in the module: ${n:-none}: $(grep '^kernel APIC registers' "$OUT/tsc-deadline.err")"; return 1; }
    run_guest tsc-deadline-user 60 --machine pc --user-apic guests/tsc_deadline.bin
    [ $rc -eq 2 ] || { echo "--user-apic: status $rc (want 2): $(why tsc-deadline-user)"; return 1; }
    grep -qx 'tsc_deadline: not offered (CPUID.1:ECX bit 24 clear)' "$OUT/tsc-deadline-user.out" || { echo "--user-apic: $(why tsc-deadline-user)"; return 1; }
}

# Halt polling (docs/module.md): the module parameter holds KVM's default, and with
# polling off (0: a halted vCPU sleeps at once) the kernel APIC's 4-vCPU boot passes too.
# Every other kernel APIC run here polls.
halt_poll_off() {
    p=/sys/module/yakvm/parameters/halt_poll_ns
    [ "$(cat $p)" = 200000 ] || { echo "halt_poll_ns is '$(cat $p)' (want 200000)"; return 1; }
    echo 0 > $p
    smp 4 --kernel-apic; r=$?
    echo 200000 > $p
    return $r
}

# With --user-apic the APIC is the emulator's: no x2APIC is offered.
no_x2apic() {
    run_guest apicread-user 60 --machine pc --user-apic guests/apicread.bin
    [ $rc -eq 2 ] || { echo "status $rc (want 2): $(why apicread-user)"; return 1; }
    same_lines apicread-user 'apicread: x2apic not offered' || return 1
}

check smp_1_cpu smp 1
check smp_2_cpus_user_apic smp 2 --user-apic
check smp_4_cpus_user_apic smp 4 --user-apic
check smp_8_cpus_user_apic smp 8 --user-apic
check smp_ipi_storm_user_apic storm --user-apic
check smp_2_cpus_kernel_apic smp 2 --kernel-apic
check smp_4_cpus_kernel_apic smp 4 --kernel-apic
check smp_8_cpus_kernel_apic smp 8 --kernel-apic
check smp_ipi_storm_kernel_apic storm --kernel-apic
check smp_4_cpus_kernel_apic_halt_polling_off halt_poll_off
check kernel_apic_xapic_and_x2apic_100000_id_reads_in_the_module apicread
check user_apic_offers_no_x2apic no_x2apic
check kernel_apic_tsc_deadline_timer tsc_deadline
check smp_2_cpus_x2apic smp_x2apic 2
check smp_8_cpus_x2apic smp_x2apic 8
check kernel_apic_irqfd_10000_interrupts irqfd
check kernel_apic_hostile_guest_8_cpus apic_hostile
check smp_aps_never_started_power_off_kernel_apic aps_never_started_kernel_apic
check smp_aps_that_never_answer silent
check smp_init_to_the_bsp_ends_the_run init_to_bsp
check smp_aps_never_started_power_off_user_apic aps_never_started
check smp_0_refused refused 'smp 0' --machine pc --smp 0
check smp_9_refused refused 'smp 9' --machine pc --smp 9
check smp_2_on_the_seed_machine_refused refused 'machine pc' --smp 2
check smp_4_cpus_on_kvm on_kvm
check smp_busy_guest_1khz_apic_timer_a_minute_no_soft_lockup no_soft_lockup
check dmesg_clean_smp dmesg_clean

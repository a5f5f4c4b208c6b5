# xv6 on yakvm (scripts/xv6.sh stages it in xv6/): each run waits for the shell's prompt,
# types a line for it and then `usertests`, as a student would at the prompt, and says
# how far it got. A measurement, not a pass/fail check: `make conformance` holds the
# shell's answer to its expectations (tests/conformance.expected).
#
# XV6_RUNS: the runs to make (default all: memfs-smp1 memfs-smp2 disk-smp1 disk-smp2
# memfs-smp1-user-apic); XV6_LINES: what is typed, lines separated by '|' (default
# 'echo xv6-says hi|usertests'); XV6_TIMEOUT: each kernel-APIC run's limit in seconds.
#
# Typing waits for the prompt: xv6's uartinit enables the receive interrupt and reads
# one byte before it unmasks IRQ 4 at the I/O APIC, so bytes that arrive before that
# raise their edge on a masked pin, which an I/O APIC ignores (82093AA datasheet; QEMU
# keeps it), and xv6 never reads the UART again until a new byte comes.
cd /mnt/shares/xv6 || exit 1
mkdir -p /mnt/shares/out/xv6
uptime_s() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%d", b - a }'; }
prompts() { tr -d '\r' < "$1" | grep -o '\$ ' | wc -l; }
# run NAME TIMEOUT LINES YAKVM-ARGS...: LINES separated by '|', each typed at the next
# prompt; the run ends at the prompt after the last one, or after TIMEOUT seconds.
run() {
    name=$1 timeout=$2 lines=$3
    shift 3
    cp fs.img /tmp/fs.img && cp xv6.img /tmp/xv6.img
    out=/mnt/shares/out/xv6/$name.out
    rm -f /tmp/xv6.in && mkfifo /tmp/xv6.in
    start=$(uptime_s)
    timeout -s KILL $((timeout + 30)) yakvm run --timeout "$timeout" "$@" < /tmp/xv6.in > "$out" 2>&1 &
    pid=$!
    exec 3> /tmp/xv6.in
    n=0 typed="" ended=""
    old_ifs=$IFS IFS='|'
    for line in $lines ""; do
        n=$((n + 1))
        while kill -0 "$pid" 2> /dev/null && [ "$(prompts "$out")" -lt $n ]; do sleep 0.5; done
        kill -0 "$pid" 2> /dev/null || break
        [ -z "$line" ] && { ended="ended at the prompt after the last line"; kill "$pid"; break; }
        typed="${typed:+$typed, }'$line' at $(since "$start") s"
        printf '%s\n' "$line" >&3
    done
    IFS=$old_ifs
    wait "$pid"
    rc=$?
    exec 3>&-
    secs=$(since "$start")
    got="no output"
    grep -q 'cpu0: starting' "$out" && got="booted"
    grep -q 'init: starting sh' "$out" && got="init started the shell"
    [ "$(grep -c 'xv6-says hi' "$out")" -ge 2 ] && got="the shell answers"
    grep -q 'usertests starting' "$out" && got="usertests running"
    grep -q 'ALL TESTS PASSED' "$out" && got="ALL TESTS PASSED"
    last=$(tr -d '\r' < "$out" | grep -v -e '^$' -e '^\$ *$' | tail -n 1 | cut -c1-70)
    echo "xv6: $name: $got (after $secs s, ${ended:-status $rc}; typed ${typed:-nothing}; last line: $last)"
}
before=$(dmesg | grep -c 'soft lockup')
lines=${XV6_LINES:-echo xv6-says hi|usertests}
runs=" ${XV6_RUNS:-memfs-smp1 memfs-smp2 disk-smp1 disk-smp2 memfs-smp1-user-apic} "
wanted() { case $runs in *" $1 "*) true ;; *) false ;; esac; }
wanted memfs-smp1 && run memfs-smp1 "$XV6_TIMEOUT" "$lines" --kernel kernelmemfs --mem 512M --smp 1 --kernel-apic
wanted memfs-smp2 && run memfs-smp2 "$XV6_TIMEOUT" "$lines" --kernel kernelmemfs --mem 512M --smp 2 --kernel-apic
wanted disk-smp1 && run disk-smp1 "$XV6_TIMEOUT" "$lines" --kernel kernel --ide /tmp/xv6.img --ide /tmp/fs.img --mem 512M --smp 1 --kernel-apic
wanted disk-smp2 && run disk-smp2 "$XV6_TIMEOUT" "$lines" --kernel kernel --ide /tmp/xv6.img --ide /tmp/fs.img --mem 512M --smp 2 --kernel-apic
# For comparison: the emulator's local APIC (every APIC access an exit to this program).
wanted memfs-smp1-user-apic && run memfs-smp1-user-apic 60 'echo xv6-says hi' --kernel kernelmemfs --mem 512M --smp 1
echo "xv6: soft lockup reports in the image's dmesg during the runs: $(($(dmesg | grep -c 'soft lockup') - before))"
echo "xv6: other WARN/BUG/Oops reports: $(dmesg | grep -cE 'WARNING:|BUG:|Oops' ) in the image's dmesg"

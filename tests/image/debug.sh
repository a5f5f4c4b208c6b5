# Debugging guests (issue 12), run inside the image by scripts/test.sh: gdb (staged from
# the build machine by scripts/stage-gdb.sh) against `yakvm run --gdb`, and --step-trace
# of small real-, protected- and long-mode guests against the expected instructions.
. /mnt/shares/tests/lib.sh
cd /mnt/shares
export HOME=/root
ip link set lo up 2>/dev/null
# gdb runs from memory: its binary, libraries and Python (95 MB) start slowly over 9p.
if cp -a /mnt/shares/gdb /tmp/gdb && mkdir -p /tmp/bin && cp /mnt/shares/bin/gdb /tmp/bin/gdb; then
    export PATH=/tmp/bin:$PATH
fi

# start_stub NAME ARGS...: yakvm run ARGS... in the background, its output in
# $OUT/NAME.out and .err; waits until its gdb stub listens. Sets $stub.
start_stub() {
    name=$1; shift
    yakvm run "$@" > "$OUT/$name.out" 2> "$OUT/$name.err" &
    stub=$!
    i=0
    until grep -q 'gdb stub on' "$OUT/$name.err" 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 100 ] || return 1
        sleep 0.1
    done
}

# stub_status: waits (at most 30 s) for the stub's yakvm to end; its exit status.
stub_status() {
    i=0
    while kill -0 $stub 2>/dev/null; do
        i=$((i + 1)); [ $i -lt 300 ] || { kill -9 $stub; break; }
        sleep 0.1
    done
    wait $stub
}

# gdb_run SCRIPT LOG: gdb in batch mode on the guest's symbols (two minutes at most).
gdb_run() { timeout 120 gdb -nx -batch -x "$1" guests/debuggee.elf > "$2" 2>&1; }

# The whole session: a breakpoint on a symbol, registers and memory, a register and a
# variable written (the guest's output changes), stepi across an OUT and an MMIO store
# (one instruction each, TF never visible in RFLAGS), the guest's end reported to gdb.
cat > /tmp/session.gdb <<'EOF'
set pagination off
set confirm off
target remote :1234
printf "start rip=%#lx\n", $pc
break answer
continue
printf "answer rdi=%d rip_ok=%d\n", $rdi, $pc == (long)&answer
printf "greeting=%s\n", (char *)&GREETING
printf "counter=%d\n", *(long *)&COUNTER
set var *(long *)&COUNTER = 1234
set $rdi = 99
printf "cs=%#x ss=%#x\n", $cs, $ss
delete
break dbg_io
continue
printf "io rip_ok=%d\n", $pc == (long)&dbg_io
stepi
printf "after out rip_ok=%d tf=%d\n", $pc == (long)&dbg_io + 1, ($eflags & 0x100) != 0
stepi
printf "before mmio rip_ok=%d\n", $pc == (long)&dbg_mmio
stepi
printf "after mmio rip_ok=%d tf=%d\n", $pc == (long)&dbg_done, ($eflags & 0x100) != 0
x/2i $pc
monitor sregs
continue
EOF
gdb_session() {
    start_stub gdb-session guests/debuggee.elf --gdb 1234 --gdb-wait || { echo "the stub did not start"; return 1; }
    gdb_run /tmp/session.gdb "$OUT/gdb-session.log"
    stub_status; rc=$?
    log=$(cat "$OUT/gdb-session.log")
    for want in 'start rip=0' 'answer rdi=41 rip_ok=1' 'greeting=hello, debugger' 'counter=7' \
                'cs=0x8 ss=0x10' 'io rip_ok=1' 'after out rip_ok=1 tf=0' 'before mmio rip_ok=1' \
                'after mmio rip_ok=1 tf=0' 'cr0 0x80010033' 'exited normally'; do
        echo "$log" | grep -qF "$want" || { echo "gdb did not show '$want': $(echo "$log" | tail -n 4)"; return 1; }
    done
    [ $rc -eq 0 ] || { echo "yakvm status $rc: $(cat "$OUT/gdb-session.err")"; return 1; }
    # The register and the variable gdb wrote, in the guest's own output.
    grep -q '^answer=100$' "$OUT/gdb-session.out" || { echo "guest output: $(cat "$OUT/gdb-session.out")"; return 1; }
    grep -q '^counter=1234$' "$OUT/gdb-session.out" || { echo "guest output: $(cat "$OUT/gdb-session.out")"; return 1; }
    grep -q '^<>$' "$OUT/gdb-session.out" || { echo "the OUT and MMIO bytes: $(cat "$OUT/gdb-session.out")"; return 1; }
    # The guest's own TF and INT3 (not gdb's: its #BP is given back to it) still work.
    grep -q '^own tf traps=3 own int3=1$' "$OUT/gdb-session.out" || { echo "guest output: $(cat "$OUT/gdb-session.out")"; return 1; }
}
check gdb_session gdb_session

# detach: the breakpoint leaves guest memory, the guest runs to its end untouched.
cat > /tmp/detach.gdb <<'EOF'
target remote :1234
break answer
continue
printf "stopped rdi=%d\n", $rdi
detach
EOF
gdb_detach() {
    start_stub gdb-detach guests/debuggee.elf --gdb 1234 --gdb-wait || { echo "the stub did not start"; return 1; }
    gdb_run /tmp/detach.gdb "$OUT/gdb-detach.log"
    stub_status; rc=$?
    grep -q 'stopped rdi=41' "$OUT/gdb-detach.log" || { echo "gdb: $(tail -n 3 "$OUT/gdb-detach.log")"; return 1; }
    [ $rc -eq 0 ] || { echo "yakvm status $rc: $(cat "$OUT/gdb-detach.err")"; return 1; }
    grep -q '^answer=42$' "$OUT/gdb-detach.out" && grep -q 'detached' "$OUT/gdb-detach.err" ||
        { echo "guest after detach: $(cat "$OUT/gdb-detach.out" "$OUT/gdb-detach.err")"; return 1; }
}
check gdb_detach gdb_detach

# gdb killed while the guest is stopped at a breakpoint: the guest runs on to its end.
cat > /tmp/abrupt.gdb <<'EOF'
target remote :1234
break answer
continue
printf "stopped\n"
shell kill -9 $PPID
EOF
gdb_abrupt() {
    start_stub gdb-abrupt guests/debuggee.elf --gdb 1234 --gdb-wait || { echo "the stub did not start"; return 1; }
    gdb_run /tmp/abrupt.gdb "$OUT/gdb-abrupt.log"
    stub_status; rc=$?
    grep -q 'stopped' "$OUT/gdb-abrupt.log" || { echo "gdb: $(tail -n 3 "$OUT/gdb-abrupt.log")"; return 1; }
    [ $rc -eq 0 ] || { echo "yakvm status $rc: $(cat "$OUT/gdb-abrupt.err")"; return 1; }
    grep -q '^answer=42$' "$OUT/gdb-abrupt.out" || { echo "guest: $(cat "$OUT/gdb-abrupt.out" "$OUT/gdb-abrupt.err")"; return 1; }
}
check gdb_abrupt_disconnect gdb_abrupt

# 16- and 32-bit guests: the stub's x86-64 registers (gdb's `set architecture i8086` or
# i386 would expect a smaller register packet), `monitor disas` decoding in the guest's
# mode, stepi across an OUT (and in 32-bit code an MMIO store), the guest's end.
cat > /tmp/real.gdb <<'EOF'
target remote :1234
stepi 3
printf "ip=%#x cs=%#x\n", $pc, $cs
monitor disas 1
continue
EOF
cat > /tmp/prot.gdb <<'EOF'
target remote :1234
stepi 4
printf "eip=%#x\n", $pc
monitor disas 1
continue
EOF
gdb_16_32() {
    start_stub gdb-real guests/step16.bin --entry real --load-addr 0x10000 --gdb 1234 --gdb-wait || { echo "the stub did not start"; return 1; }
    timeout 120 gdb -nx -batch -x /tmp/real.gdb > "$OUT/gdb-real.log" 2>&1
    stub_status || { echo "step16 under gdb: $(cat "$OUT/gdb-real.err")"; return 1; }
    grep -q 'ip=0x6 cs=0x1000' "$OUT/gdb-real.log" && grep -q 'pushf' "$OUT/gdb-real.log" && grep -q 'exited normally' "$OUT/gdb-real.log" ||
        { echo "real mode: $(tail -n 4 "$OUT/gdb-real.log")"; return 1; }
    start_stub gdb-prot guests/step32.bin --entry protected --gdb 1234 --gdb-wait || { echo "the stub did not start"; return 1; }
    timeout 120 gdb -nx -batch -x /tmp/prot.gdb > "$OUT/gdb-prot.log" 2>&1
    stub_status || { echo "step32 under gdb: $(cat "$OUT/gdb-prot.err")"; return 1; }
    grep -q 'eip=0x11' "$OUT/gdb-prot.log" && grep -q 'pushf' "$OUT/gdb-prot.log" && grep -q 'exited normally' "$OUT/gdb-prot.log" ||
        { echo "protected mode: $(tail -n 4 "$OUT/gdb-prot.log")"; return 1; }
}
check gdb_16_and_32_bit gdb_16_32

# Ctrl-C stops a guest that never exits (spin.bin), then gdb kills it. gdb attaches to a
# guest already running (no --gdb-wait).
cat > /tmp/ctrlc.gdb <<'EOF'
target remote :1234
printf "attached\n"
shell touch /tmp/gdb-attached
continue
printf "interrupted rip=%#lx\n", $pc
kill
EOF
gdb_ctrl_c() {
    rm -f /tmp/gdb-attached
    start_stub gdb-ctrlc guests/spin.bin --gdb 1234 || { echo "the stub did not start"; return 1; }
    timeout 120 gdb -nx -batch -x /tmp/ctrlc.gdb > "$OUT/gdb-ctrlc.log" 2>&1 &
    gdb=$!
    i=0
    until [ -e /tmp/gdb-attached ]; do i=$((i + 1)); [ $i -lt 300 ] || break; sleep 0.1; done
    sleep 2     # gdb continues the guest
    kill -INT $gdb
    i=0
    while kill -0 $gdb 2>/dev/null; do i=$((i + 1)); [ $i -lt 100 ] || { kill -9 $gdb; break; }; sleep 0.1; done
    stub_status; rc=$?
    grep -q 'SIGINT' "$OUT/gdb-ctrlc.log" && grep -q 'interrupted rip=0x' "$OUT/gdb-ctrlc.log" ||
        { echo "gdb: $(tail -n 4 "$OUT/gdb-ctrlc.log")"; return 1; }
    [ $rc -eq 137 ] || { echo "yakvm status $rc after gdb's kill: $(cat "$OUT/gdb-ctrlc.err")"; return 1; }
}
check gdb_ctrl_c gdb_ctrl_c

# --step-trace: the exact instructions of each guest's source, with their exits, the
# event deliveries (INT 0x30 in real mode, #UD in long mode) and the instructions after
# each exit; the guests themselves check that TF never shows (PUSHF, frames).
step_trace() {
    name=$1; shift
    out=$(yakvm run "guests/$name.bin" "$@" --step-trace "$OUT/$name.trace" 2>&1); rc=$?
    [ $rc -eq 0 ] || { echo "status $rc: $out"; return 1; }
    cmp "$OUT/$name.trace" "tests/expected/$name.trace" > /dev/null ||
        { echo "differs from tests/expected/$name.trace: $(diff "tests/expected/$name.trace" "$OUT/$name.trace" | head -n 4 | tr '\n' ' ')"; return 1; }
}
check step_trace_real step_trace step16 --entry real --load-addr 0x10000
check step_trace_protected step_trace step32 --entry protected
check step_trace_long step_trace step64

# How slow: a guest printing 5000 bytes, traced (the figure in docs/debugging.md).
step_trace_speed() {
    t0=$(cut -d' ' -f1 /proc/uptime)
    yakvm run guests/count.bin --step-trace /tmp/count.trace > /dev/null 2> "$OUT/count-trace.err" || return 1
    t1=$(cut -d' ' -f1 /proc/uptime)
    n=$(wc -l < /tmp/count.trace)
    echo "step-trace: $n instructions in $(echo "$t0 $t1" | awk '{ printf "%.1f", $2 - $1 }') s"
    [ "$n" -gt 5000 ]
}
step_trace_speed || fail step_trace_speed "count.bin traced: $(cat "$OUT/count-trace.err")"

# Without a debugger the same guests run as they always did, their own TF and INT3 too.
untraced() {
    yakvm run guests/step16.bin --entry real --load-addr 0x10000 > /dev/null && yakvm run guests/step64.bin > /dev/null || return 1
    out=$(yakvm run guests/debuggee.elf) || { echo "debuggee: $out"; return 1; }
    echo "$out" | grep -q '^own tf traps=3 own int3=1$' || { echo "debuggee: $out"; return 1; }
}
check untraced_guests_unchanged untraced

check dmesg_clean dmesg_clean

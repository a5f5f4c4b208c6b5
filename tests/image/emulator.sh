# Tests of the emulator (loading, entry modes, devices, MMIO decoding, study aids, errors),
# run inside the image by scripts/test.sh. Disk images are checked byte by byte on the host.
. /mnt/shares/tests/lib.sh
cd /mnt/shares

# expect_error NAME MESSAGE COMMAND...: the command must fail with MESSAGE on stderr.
expect_error() {
    want=$1; shift
    msg=$("$@" 2>&1 >/dev/null); rc=$?
    [ $rc -ne 0 ] || { echo "status 0 for: $*"; return 1; }
    echo "$msg" | grep -q -- "$want" || { echo "for '$*' got: $msg"; return 1; }
    # One error line (clap adds the possible values and a hint to its own).
    [ "$(echo "$msg" | grep -c 'error')" -eq 1 ] && [ "$(echo "$msg" | wc -l)" -le 4 ] || { echo "not one error for '$*': $msg"; return 1; }
}

new_disk() { dd if=/dev/zero of="$1" bs=512 count=16 2>/dev/null; }

# The disk suite over ports and over MMIO (the seed's --mem 2M --mmio-base 0x200000).
disk_suite_ports() {
    new_disk "$OUT/disk-ports.img"
    out=$(yakvm run --mem 2M --disk "$OUT/disk-ports.img" guests/disk.bin 2>/dev/null); rc=$?
    echo "$out" > "$OUT/disk-ports.out"
    [ $rc -eq 0 ] || { echo "status $rc: $(echo "$out" | grep -v '^ok' | head -n 3)"; return 1; }
    [ "$(echo "$out" | grep -c '^ok ')" -eq 18 ] || { echo "$(echo "$out" | grep -vc '^ok ') lines not ok: $out"; return 1; }
}
disk_suite_mmio() {
    new_disk "$OUT/disk-mmio.img"
    out=$(yakvm run --mem 2M --mmio-base 0x200000 --disk "$OUT/disk-mmio.img" guests/disk_mmio.bin 2>/dev/null); rc=$?
    echo "$out" > "$OUT/disk-mmio.out"
    [ $rc -eq 0 ] || { echo "status $rc: $(echo "$out" | grep -v '^ok' | head -n 3)"; return 1; }
    [ "$(echo "$out" | grep -c '^ok ')" -eq 18 ] || { echo "$(echo "$out" | grep -vc '^ok ') lines not ok: $out"; return 1; }
}
disk_suite_exact_output() {
    # Both suites print the same lines (stdout), compared whole.
    for v in ports mmio; do
        cmp -s "$OUT/disk-$v.out" /mnt/shares/tests/expected/disk.out || { echo "$v: $(diff "$OUT/disk-$v.out" /mnt/shares/tests/expected/disk.out | head -n 4)"; return 1; }
    done
}
no_disk_is_size_zero() {
    # Without --disk the suite's setup sees size 0: its first size check fails, cleanly.
    out=$(yakvm run --mem 2M guests/disk.bin 2>/dev/null); rc=$?
    [ $rc -eq 1 ] || { echo "status $rc"; return 1; }
    echo "$out" | grep -q '^FAIL setup reports size 8192' || { echo "$out" | head -n 3; return 1; }
}

real_mode_guest() {
    out=$(yakvm run --entry real --load-addr 0x10000 guests/real16.bin); rc=$?
    [ $rc -eq 0 ] && [ "$out" = "real mode ok, cs=1000" ] || { echo "status $rc: $out"; return 1; }
}
protected_mode_guest() {
    out=$(yakvm run --entry protected guests/prot32.bin); rc=$?
    [ $rc -eq 0 ] && [ "$out" = "protected mode ok, mmio" ] || { echo "status $rc: $out"; return 1; }
}
elf_guest() {
    out=$(yakvm run guests/hello.elf); rc=$?
    [ $rc -eq 0 ] && [ "$out" = "Hello from a yakvm guest!" ] || { echo "status $rc: $out"; return 1; }
}
exit_port_status() {
    # The checks guests end through port 0xf4: with 0 when all passed (hypercall.bin),
    # with 1 when one failed (the disk suite without a disk).
    yakvm run guests/hypercall.bin >/dev/null || { echo "exit port 0 gave $?"; return 1; }
    yakvm run --mem 2M guests/disk.bin >/dev/null 2>&1; rc=$?
    [ $rc -eq 1 ] || { echo "exit port 1 gave $rc"; return 1; }
}
output_through_a_pipe() {
    # Nothing lost when stdout is a pipe and the guest ends at once.
    n=$(yakvm run guests/count.bin | wc -c)
    [ "$n" -eq 5000 ] || { echo "$n bytes"; return 1; }
}

timeout_ends_a_run() {
    start=$(date +%s)
    msg=$(yakvm run --timeout 2 guests/spin.bin 2>&1); rc=$?
    took=$(( $(date +%s) - start ))
    [ $rc -eq 124 ] || { echo "status $rc: $msg"; return 1; }
    echo "$msg" | grep -q 'timed out after 2 s' || { echo "message: $msg"; return 1; }
    [ $took -le 10 ] || { echo "took $took s"; return 1; }
}
# Coalesced writes: count.bin's 5000 serial OUTs wait in the run page's list (64
# entries) and reach the emulator in batches: every 65th OUT, the list being full,
# exits, so 76 exits carry them all (plus the final HLT); the output is the same byte for
# byte. --no-coalesced-io makes every OUT an exit again.
coalesced_io() {
    want=$(awk 'BEGIN { for (i = 0; i < 5000; i++) printf "%c", 97 + i % 26 }')
    out=$(yakvm run --stats guests/count.bin 2> "$OUT/coalesced.err") || return 1
    [ "$out" = "$want" ] || { echo "output differs ($(echo -n "$out" | wc -c) bytes)"; return 1; }
    grep -q '^  coalesced  *4924$' "$OUT/coalesced.err" || { echo "coalesced count: $(cat "$OUT/coalesced.err")"; return 1; }
    grep -q '^exits handled by the emulator: 77 (io 76, mmio 0, hlt 1,' "$OUT/coalesced.err" || { echo "exits: $(cat "$OUT/coalesced.err")"; return 1; }
    out=$(yakvm run --stats --no-coalesced-io guests/count.bin 2> "$OUT/coalesced.err") || return 1
    [ "$out" = "$want" ] || { echo "output differs without coalescing"; return 1; }
    grep -q '^exits handled by the emulator: 5001 (io 5000,' "$OUT/coalesced.err" || { echo "exits without coalescing: $(cat "$OUT/coalesced.err")"; return 1; }
    ! grep -q 'coalesced' "$OUT/coalesced.err" || { echo "coalesced without coalescing"; return 1; }
}

# IOEVENTFD: ioeventfd.bin's matching writes (1000 OUTs to a port, 1000 '#' to the serial
# port, 1000 MMIO stores in five MOV forms, 1001 matching stores to the scratch register)
# signal eventfds, counted by yakvm's --ioeventfd thread (an eventfd read gives the sum of
# the signals since the last one: the counts are exact, the wake-ups fewer), and never
# reach the emulator; the writes that do not match do, as before (the console's other
# bytes, the scratch register's 3 other writes and 4 reads).
IOEVENTFDS='--no-coalesced-io --ioeventfd pio:0x60 --ioeventfd pio:0x10:1:0x23 --ioeventfd mmio:0xc0000300 --ioeventfd mmio:0xc00007f8:4:0xcafe'
ioeventfd_counts() {
    out=$(yakvm run --stats $IOEVENTFDS guests/ioeventfd.bin 2> "$OUT/ioeventfd.err"); rc=$?
    [ $rc -eq 0 ] || { echo "status $rc: $out $(tail -n 3 "$OUT/ioeventfd.err")"; return 1; }
    ioeventfd_results "$out" "$OUT/ioeventfd.err" || return 1
    # The module's own count: every matching write, none of them an exit to the emulator.
    grep -q '^  ioeventfd  *4001$' "$OUT/ioeventfd.err" || { echo "module's count: $(grep -A20 '^exits:' "$OUT/ioeventfd.err")"; return 1; }
}

trace_and_stats() {
    yakvm run --trace --stats guests/hello.bin > "$OUT/trace.out" 2> "$OUT/trace.err" || return 1
    n=$(grep -c '^\[trace\] rip=0x[0-9a-f]* io out port=0x10 size=1 count=1 data=' "$OUT/trace.err")
    [ "$n" -eq 26 ] || { echo "$n io trace lines, want 26"; return 1; }
    grep -q '^\[trace\] rip=0x[0-9a-f]* hlt$' "$OUT/trace.err" || { echo "no hlt line"; return 1; }
    # 26 OUTs and the HLT reach the emulator; timer interrupts may add exits the module
    # handles itself.
    grep -q '^exits: [0-9]* in all, 27 reached the emulator$' "$OUT/trace.err" || { echo "no exit count: $(tail -n 4 "$OUT/trace.err")"; return 1; }
    grep -q '^  io  *26$' "$OUT/trace.err" || { echo "io count: $(tail -n 4 "$OUT/trace.err")"; return 1; }
    grep -q '^time: [0-9.]* s in the guest (and module), [0-9.]* s in the emulator$' "$OUT/trace.err" || { echo "no times"; return 1; }
}
trace_of_mmio() {
    yakvm run --trace --entry protected guests/prot32.bin > /dev/null 2> "$OUT/trace-mmio.err" || return 1
    grep -q '^\[trace\] rip=0x[0-9a-f]* mmio write gpa=0xc0000080 size=4 value=0xa6f696d$' "$OUT/trace-mmio.err" || { echo "no mmio line: $(grep mmio "$OUT/trace-mmio.err")"; return 1; }
}
info_command() {
    out=$(yakvm info) || return 1
    echo "$out" | grep -q '^nested paging: *yes' && echo "$out" | grep -q '^ASIDs: *[0-9]' &&
        echo "$out" | grep -q '^decode assists: *\(yes\|no\)' || { echo "$out"; return 1; }
}
help_text() {
    yakvm run --help | grep -q -- '--disk <DISK>' && yakvm --help | grep -q 'info' || { echo "help is missing flags"; return 1; }
}

unemulatable_mmio_instruction() {
    # mov eax, 0xc0000080; cmove eax, [rax]; hlt -- CMOVcc from MMIO is not emulated.
    printf '\270\200\000\000\300\017\104\000\364' > "$OUT/cmov-mmio.bin"
    expect_error "cannot emulate 'cmove eax,\[rax\]' (\[0f, 44, 00\]) at rip 0x5 on MMIO" yakvm run "$OUT/cmov-mmio.bin"
}
bad_input_errors() {
    dd if=/dev/zero of="$OUT/odd.img" bs=100 count=1 2>/dev/null
    dd if=/dev/zero of="$OUT/big.bin" bs=1024 count=100 2>/dev/null
    expect_error 'not a multiple of 512' yakvm run --disk "$OUT/odd.img" guests/hello.bin || return 1
    expect_error 'cannot open disk' yakvm run --disk "$OUT/none.img" guests/hello.bin || return 1
    expect_error 'do not fit in guest RAM' yakvm run --mem 128K "$OUT/big.bin" || return 1
    expect_error 'guest RAM must be a multiple of 4 KiB' yakvm run --mem 100 guests/hello.bin || return 1
    expect_error "invalid value 'weird'" yakvm run --entry weird guests/hello.bin || return 1
    expect_error 'the MMIO window must be 4 KiB aligned, above RAM' yakvm run --mmio-base 0x1000 guests/hello.bin || return 1
    expect_error 'needs a load address below 1 MiB' yakvm run --entry real --load-addr 0x100000 guests/real16.bin || return 1
    expect_error "is not a size" yakvm run --mem lots guests/hello.bin || return 1
    expect_error "the test device is a pc machine's" yakvm run --testdev guests/hello.bin || return 1
}

check disk_suite_ports disk_suite_ports
check disk_suite_mmio disk_suite_mmio
check disk_suite_exact_output disk_suite_exact_output
check no_disk_is_size_zero no_disk_is_size_zero
check real_mode_guest real_mode_guest
check protected_mode_guest protected_mode_guest
check elf_guest elf_guest
check exit_port_status exit_port_status
check output_through_a_pipe output_through_a_pipe
check timeout_ends_a_run timeout_ends_a_run
check coalesced_io coalesced_io
check ioeventfd_counts ioeventfd_counts
check trace_and_stats trace_and_stats
check trace_of_mmio trace_of_mmio
check info_command info_command
check help_text help_text
check unemulatable_mmio_instruction unemulatable_mmio_instruction
check bad_input_errors bad_input_errors
check dmesg_clean_emulator dmesg_clean

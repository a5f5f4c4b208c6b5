# xv6 on yakvm (scripts/xv6.sh stages it in xv6/): each run types a line for the shell and
# then `usertests`, as a student would, and says how far it got. A measurement, not a
# pass/fail check: xv6 reaches its shell only once the local APIC is in the module (xv6
# reads its APIC ID in every pushcli/popcli: one exit to userspace each).
cd /mnt/shares/xv6 || exit 1
mkdir -p /mnt/shares/out/xv6
run() {
    name=$1
    shift
    cp fs.img /tmp/fs.img && cp xv6.img /tmp/xv6.img
    out=/mnt/shares/out/xv6/$name.out
    start=$(cut -d' ' -f1 /proc/uptime)
    printf 'echo xv6-says hi\nusertests\n' |
        timeout -s KILL $((XV6_TIMEOUT + 30)) yakvm run --timeout "$XV6_TIMEOUT" "$@" > "$out" 2>&1
    rc=$?
    secs=$(awk -v a="$start" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%d", b - a }')
    got="no output"
    grep -q 'cpu0: starting' "$out" && got="booted"
    grep -q 'init: starting sh' "$out" && got="init started the shell"
    [ "$(grep -o 'xv6-says hi' "$out" | wc -l)" -ge 2 ] && got="the shell answers"
    grep -q 'usertests starting' "$out" && got="usertests running"
    grep -q 'ALL TESTS PASSED' "$out" && got="ALL TESTS PASSED"
    last=$(tr -d '\r' < "$out" | grep -v '^$' | tail -n 1 | cut -c1-70)
    echo "xv6: $name: $got (status $rc after $secs s; last line: $last)"
}
before=$(dmesg | grep -c 'soft lockup')
run memfs-smp1 --kernel kernelmemfs --mem 512M --smp 1
run memfs-smp2 --kernel kernelmemfs --mem 512M --smp 2
run disk-smp1 --kernel kernel --ide /tmp/xv6.img --ide /tmp/fs.img --mem 512M --smp 1
echo "xv6: soft lockup reports in the image's dmesg during the runs: $(($(dmesg | grep -c 'soft lockup') - before))"

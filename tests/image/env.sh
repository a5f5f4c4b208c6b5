# Tests of the environment issue, run inside the image by scripts/test.sh.
. /mnt/shares/tests/lib.sh
cd /mnt/shares

module_loaded() {
    grep -q '^yakvm ' /proc/modules || { echo "yakvm not in /proc/modules"; return 1; }
    [ -c /dev/yakvm ] || { echo "/dev/yakvm missing"; return 1; }
    dmesg | grep -q 'yakvm: SVM enabled on all CPUs' || { echo "no load message"; return 1; }
}

hello_output() {
    out=$(yakvm run guests/hello.bin); rc=$?
    [ $rc -eq 0 ] || { echo "exit status $rc"; return 1; }
    [ "$out" = "Hello from a yakvm guest!" ] || { echo "got: '$out'"; return 1; }
}

# Exact bytes are compared on the host (scripts/test.sh): here only the status.
count_writes() {
    yakvm run guests/count.bin > "$OUT/count.out"
}

sse_survives_exits() {
    out=$(yakvm run guests/sse.bin); rc=$?
    [ $rc -eq 0 ] || { echo "exit status $rc: $(echo "$out" | tail -n 1)"; return 1; }
    [ "$(echo "$out" | tail -n 1)" = "sse ok" ] || { echo "got: $(echo "$out" | tail -n 1)"; return 1; }
}

missing_guest_is_an_error() {
    msg=$(yakvm run /nonexistent.bin 2>&1); rc=$?
    [ $rc -ne 0 ] || { echo "exit status 0"; return 1; }
    echo "$msg" | grep -q 'cannot read guest /nonexistent.bin' || { echo "message: $msg"; return 1; }
}

reload_twice() {
    for i in 1 2; do
        rmmod yakvm || { echo "rmmod $i failed"; return 1; }
        [ ! -e /dev/yakvm ] || { echo "/dev/yakvm still there after rmmod $i"; return 1; }
        insmod /mnt/shares/yakvm.ko || { echo "insmod $i failed"; return 1; }
        hello_output || { echo "guest after reload $i failed"; return 1; }
    done
}

busy_module_cannot_unload() {
    # An open /dev/yakvm holds a module reference: rmmod must refuse.
    exec 3</dev/yakvm
    if rmmod yakvm 2>/dev/null; then exec 3<&-; insmod /mnt/shares/yakvm.ko; echo "rmmod succeeded with /dev/yakvm open"; return 1; fi
    exec 3<&-
    grep -q '^yakvm ' /proc/modules
}

# kvm_amd turns SVM on at load and owns VM_HSAVE_PA: yakvm must refuse to load beside it,
# and load again once it is gone.
refuses_beside_kvm_amd() {
    rmmod yakvm || { echo "rmmod yakvm failed"; return 1; }
    insmod kvm/irqbypass.ko && insmod kvm/kvm.ko && insmod kvm/kvm-amd.ko || { echo "kvm_amd did not load"; return 1; }
    if insmod /mnt/shares/yakvm.ko 2>/dev/null; then echo "yakvm loaded beside kvm_amd"; rc=1; else rc=0; fi
    dmesg | grep -q 'yakvm: SVM is already in use on CPU [0-9]* (EFER.SVME = 1): is kvm_amd loaded' || { echo "no message"; rc=1; }
    rmmod kvm_amd kvm irqbypass || { echo "could not unload kvm"; return 1; }
    insmod /mnt/shares/yakvm.ko || { echo "yakvm did not load after kvm_amd left"; return 1; }
    hello_output || return 1
    return $rc
}

check module_loaded module_loaded
check hello_output hello_output
check count_writes count_writes
check sse_survives_exits sse_survives_exits
check missing_guest_is_an_error missing_guest_is_an_error
check busy_module_cannot_unload busy_module_cannot_unload
check reload_twice reload_twice
check refuses_beside_kvm_amd refuses_beside_kvm_amd
check dmesg_clean dmesg_clean

# Run on a CPU with LA57, so the kernel uses 5-level paging: the module must refuse to load.
. /mnt/shares/tests/lib.sh

refuses_5_level_paging() {
    grep -q la57 /proc/cpuinfo || { echo "the CPU model has no la57"; return 1; }
    grep -q '^yakvm ' /proc/modules && { echo "yakvm loaded under 5-level paging"; return 1; }
    insmod /mnt/shares/yakvm.ko 2>/dev/null && { echo "insmod succeeded"; return 1; }
    dmesg | grep -q 'yakvm: the host uses 5-level paging' || { echo "no message; dmesg: $(dmesg | grep yakvm | tail -n 2)"; return 1; }
}

check refuses_5_level_paging refuses_5_level_paging
check dmesg_clean_la57 dmesg_clean

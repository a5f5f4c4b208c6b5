# Run on a CPU model without SVM: the module must refuse to load, saying why.
. /mnt/shares/tests/lib.sh

refuses_without_svm() {
    grep -q '^yakvm ' /proc/modules && { echo "yakvm loaded on a CPU without SVM"; return 1; }
    insmod /mnt/shares/yakvm.ko 2>/dev/null && { echo "insmod succeeded"; return 1; }
    [ ! -e /dev/yakvm ] || { echo "/dev/yakvm exists"; return 1; }
    dmesg | grep -q 'yakvm: this CPU has no SVM' || { echo "no message; dmesg: $(dmesg | grep yakvm | tail -n 2)"; return 1; }
}

check refuses_without_svm refuses_without_svm
check dmesg_clean_no_svm dmesg_clean

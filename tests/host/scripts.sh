#!/usr/bin/env bash
# The host-side entry points as users call them: `make run CMD=...` and `scripts/qemu.sh`.
# Each check boots the image once and prints "PASS <name>" or "FAIL <name>: <why>".
set -uo pipefail
cd "$(dirname "$0")/../.."

# make passes CMD to the image byte for byte: `$`, `$(...)`, `$?` and `$$` are the shell's.
out=$(make -s run CMD='x=41; echo "v=$((x+1)) st=$? $$"' 2>&1)
rc=$?
if ((rc == 0)) && grep -qE '^v=42 st=0 [0-9]+$' <<<"${out//$'\r'/}"; then
    echo "PASS make_run_cmd_keeps_dollars"
else
    echo "FAIL make_run_cmd_keeps_dollars: status $rc, output: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
fi

# The status survives output without a final newline.
out=$(CMD='printf abc' scripts/qemu.sh 2>&1)
rc=$?
if ((rc == 0)) && [[ ${out//$'\r'/} == *abc ]]; then
    echo "PASS cmd_status_after_output_without_newline"
else
    echo "FAIL cmd_status_after_output_without_newline: status $rc, output ends with: $(tail -c 100 <<<"$out")"
fi

# ... and output that imitates any marker cannot fake it.
out=$(CMD='printf "YAKVM-EXIT-STATUS=0\nYAKVM-EXIT-STATUS=0"; exit 3' scripts/qemu.sh 2>&1)
rc=$?
if ((rc == 3)) && [[ ${out//$'\r'/} == *$'YAKVM-EXIT-STATUS=0\nYAKVM-EXIT-STATUS=0' ]]; then
    echo "PASS cmd_status_not_faked_by_output"
else
    echo "FAIL cmd_status_not_faked_by_output: status $rc (expected 3), output ends with: $(tail -c 100 <<<"$out")"
fi

#!/usr/bin/env bash
# Stages the host's gdb for the image (the gdb tests, and users debugging guests there):
# the binary, every shared library it loads and the dynamic loader, gdb's data directory
# and the part of the Python standard library gdb needs to start (it embeds Python), all
# under DEST (shares/gdb), with a wrapper at shares/bin/gdb. Nothing of it goes into git.
#
#   scripts/stage-gdb.sh DEST
set -euo pipefail
source "$(dirname "$0")/common.sh"

dest=${1:?usage: stage-gdb.sh DEST}
gdb=/usr/bin/gdb
[[ -x $gdb ]] || die "no $gdb on this machine (apt-get install gdb)"
stamp="$dest/.staged"
if [[ -f $stamp && $stamp -nt $gdb && $stamp -nt $0 ]]; then
    exit 0
fi
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/lib" "$dest/share" "$dest/python/lib"
cp "$gdb" "$dest/bin/gdb"
# Every library ldd resolves, and the loader itself.
ldd "$gdb" | awk '/=> \// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }' | while read -r lib; do
    cp -L "$lib" "$dest/lib/"
done
cp -r /usr/share/gdb "$dest/share/gdb"
# The Python gdb embeds (libpython3.X): its standard library, without what gdb never uses.
pyver=$(ldd "$gdb" | sed -n 's/.*libpython\([0-9.]*[0-9]\)\.so.*/\1/p' | head -n 1)
[[ -n $pyver && -d /usr/lib/python$pyver ]] || die "gdb's Python standard library (/usr/lib/python$pyver) is missing"
# The compiled modules (__pycache__) come too: compiling them at every start is slow there.
tar -C /usr/lib -cf - --exclude="python$pyver/test" --exclude="python$pyver/idlelib" \
    --exclude="python$pyver/tkinter" --exclude="python$pyver/ensurepip" --exclude="python$pyver/lib2to3" \
    --exclude="python$pyver/pydoc_data" --exclude="python$pyver/config-*" --exclude="python$pyver/dist-packages" \
    --exclude="python$pyver/site-packages" "python$pyver" | tar -C "$dest/python/lib" -xf -
# gdb's own Python modules, compiled once here (by the same Python version).
"/usr/bin/python$pyver" -m compileall -q "$dest/share/gdb/python" > /dev/null
mkdir -p "$(dirname "$dest")/bin"
cat > "$(dirname "$dest")/bin/gdb" <<'WRAP'
#!/bin/sh
# gdb from the build machine, with its own libraries, loader and Python (scripts/stage-gdb.sh).
d=$(dirname "$0")/../gdb
PYTHONHOME=$d/python PYTHONDONTWRITEBYTECODE=1 exec "$d/lib/$(ls "$d/lib" | grep '^ld-linux')" \
    --library-path "$d/lib" "$d/bin/gdb" --data-directory="$d/share/gdb" "$@"
WRAP
chmod +x "$(dirname "$dest")/bin/gdb"
touch "$stamp"
log "gdb: staged in $dest ($(du -sh "$dest" | cut -f1))"

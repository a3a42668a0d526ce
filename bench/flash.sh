#!/usr/bin/env bash
# Flashing benchmark (issue 5). Prints figures; asserts nothing.
#
#   bench/flash.sh [IMAGE] [ROUNDS]       (default out/flypack.img, 3)
#
# Writes IMAGE to the same target with `dd bs=4M conv=fsync`, `bmaptool copy`
# (Debian's bmap-tools, using IMAGE's block map) and `builder flash` (its
# read-back verify included), in turns, ROUNDS times, to (1) a file and
# (2) a loop device over a file on the same disk. Reports medians and the
# ratios builder/dd and builder/bmaptool.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-out/flypack.img}"
rounds="${2:-3}"
bin="${FLYPACK_BIN_DIR:-target/release}"
work="$(mktemp -d /var/tmp/flypack-bench-flash.XXXXXX)"
loopdev=""
trap '[ -n "$loopdev" ] && losetup -d "$loopdev"; rm -rf "$work"' EXIT
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
size=$(stat -c %s "$image")
cat "$image" > /dev/null  # the source in the page cache for every tool

run_all() { # $1: target, $2: label
  local t="$1"
  : > "$work/dd"; : > "$work/bmap"; : > "$work/fb"
  for i in $(seq 1 "$rounds"); do
    [ -b "$t" ] || { rm -f "$t"; truncate -s "$size" "$t"; }
    a=$(now); dd if="$image" of="$t" bs=4M conv=fsync status=none; b=$(now)
    echo "$b - $a" | bc >> "$work/dd"
    [ -b "$t" ] || { rm -f "$t"; truncate -s "$size" "$t"; }
    a=$(now); bmaptool -q copy "$image" "$t"; b=$(now)
    echo "$b - $a" | bc >> "$work/bmap"
    [ -b "$t" ] || rm -f "$t"
    a=$(now); "$bin/builder" flash "$image" "$t" 2>/dev/null; b=$(now)
    echo "$b - $a" | bc >> "$work/fb"
  done
  d=$(median < "$work/dd"); m=$(median < "$work/bmap"); f=$(median < "$work/fb")
  echo "$2: dd $d s, bmaptool $m s, builder flash (with verify) $f s"
  echo "    builder/dd = $(echo "scale=3; $f / $d" | bc)  (goal <= 0.2), builder/bmaptool = $(echo "scale=3; $f / $m" | bc)  (goal < 1)"
  echo "    runs: dd $(tr '\n' ' ' < "$work/dd")| bmaptool $(tr '\n' ' ' < "$work/bmap")| builder $(tr '\n' ' ' < "$work/fb")"
}

echo "image: $size bytes, $(du --block-size=1 "$image" | cut -f1) bytes of data"
run_all "$work/target.img" "file target"
truncate -s "$size" "$work/loop.img"
loopdev=$(losetup --find --show "$work/loop.img")
run_all "$loopdev" "loop device ($loopdev)"

#!/usr/bin/env bash
# Dump throughput of this build next to another build of snapdump (e.g.
# the one before a refactor), on the level-0 benchmark tree: a tree dump
# and a dump from a volume holding the same snapshot, each build twice,
# alternating, to files on a tmpfs. Needs no root; the tree is the one
# scripts/bench.sh generates (made on first use).
#
#   SNAPDUMP_BEFORE=/path/to/old/snapdump scripts/bench-compare.sh [WORKDIR]
. "$(dirname "$0")/bench-lib.sh"
old=${SNAPDUMP_BEFORE:?set SNAPDUMP_BEFORE to the other build}
echo "tree: $(du -s --apparent-size -B1 "$src" | cut -f1) bytes apparent, $(find "$src" | wc -l) entries"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
warm
printf '\n%-40s %9s %14s %10s\n' "dump" "seconds" "stream bytes" "peak MiB"
for run in 1 2; do
  for which in before after; do
    b=$bin; [ $which = before ] && b=$old
    rm -rf "$out/cat" "$out/l0.sdump"
    timeit "$b" dump -0 -f "$out/l0.sdump" --catalog "$out/cat" "$src"
    printf '%-40s %9.2f %14d %10d\n' "tree dump -0, $which (run $run)" "$secs" "$(stat -c %s "$out/l0.sdump")" $((kib / 1024))
  done
done
"$bin" volume create "$out/v.vol"
"$bin" restore -r -f "$out/l0.sdump" --volume "$out/v.vol" >/dev/null
for run in 1 2; do
  for which in before after; do
    b=$bin; [ $which = before ] && b=$old
    rm -f "$out/v.sdump"
    timeit "$b" dump -0 -f "$out/v.sdump" "$out/v.vol"
    printf '%-40s %9.2f %14d %10d\n' "volume dump -0, $which (run $run)" "$secs" "$(stat -c %s "$out/v.sdump")" $((kib / 1024))
  done
done

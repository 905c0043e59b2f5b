#!/usr/bin/env bash
# Level-1 benchmark: snapdump next to `tar --listed-incremental | zstd -3`
# on the tree of scripts/bench.sh, after the mutation of
# `gentree mutate` (1% of the 4 KiB blocks of each big file rewritten in
# place; about 1% of the small files rewritten, added and deleted), then a
# chain restore (level 0 + level 1) of both into a fresh loop-mounted ext4.
# Needs root (loop mounts). Each run mutates the tree further.
#
#   scripts/bench-incremental.sh [WORKDIR]   (default /var/tmp/snapdump-bench)
. "$(dirname "$0")/bench-lib.sh"
seed=$(date +%s)
# Files changed less than a second before a dump are compared block by
# block at the next dump (coarse file clocks): let the tree settle first.
"$gen" mutate "$src" "$seed" > /dev/null
sleep 1.2
warm

"$bin" dump -0 -f "$out/s0.sdump" --catalog "$out/cat" "$src"
tar --sparse --xattrs --atime-preserve=system -g "$out/tar.snar" -cf - -C "$src" . | zstd -q -3 -T0 > "$out/t0.tar.zst"
entries=$(find "$src" | wc -l)

printf '\n%-44s %9s %14s\n' "level 1 of an unchanged tree" "seconds" "stream bytes"
timeit "$bin" dump -1 -f "$out/u1.sdump" --catalog "$out/cat" "$src"
printf '%-44s %9.2f %14d\n' "snapdump dump -1" "$secs" "$(stat -c %s "$out/u1.sdump")"
strace -f -c -o "$out/strace" "$bin" dump -1 -f "$out/u2.sdump" --catalog "$out/cat" "$src" >/dev/null
stats=$(awk '$NF ~ /^(newfstatat|statx|fstat|lstat|stat)$/ {s+=$4} END {print s+0}' "$out/strace")
opens=$(awk '$NF ~ /^(openat|open)$/ {s+=$4} END {print s+0}' "$out/strace")
reads=$(awk '$NF ~ /^(read|pread64)$/ {s+=$4} END {print s+0}' "$out/strace")
echo "  syscalls for $entries entries: $stats stat-family, $opens opens, $reads reads"
cp "$out/tar.snar" "$out/tar.snar.u"
timeit bash -c "tar --sparse --xattrs --atime-preserve=system -g '$out/tar.snar.u' -cf - -C '$src' . | zstd -q -3 -T0 > '$out/u1.tar.zst'"
printf '%-44s %9.2f %14d\n' "tar -g | zstd -3 -T0" "$secs" "$(stat -c %s "$out/u1.tar.zst")"

changed=$("$gen" mutate "$src" "$((seed + 1))")
sleep 1.2
printf '\n%-44s %9s %14s\n' "level 1 after the mutation" "seconds" "stream bytes"
echo "  changed data: $changed bytes"
timeit "$bin" dump -1 -f "$out/s1.sdump" --catalog "$out/cat" "$src"
s1=$(stat -c %s "$out/s1.sdump"); t1=$secs
printf '%-44s %9.2f %14d\n' "snapdump dump -1" "$secs" "$s1"
cp "$out/tar.snar" "$out/tar.snar.1"
timeit bash -c "tar --sparse --xattrs --atime-preserve=system -g '$out/tar.snar.1' -cf - -C '$src' . | zstd -q -3 -T0 > '$out/t1.tar.zst'"
tz=$(stat -c %s "$out/t1.tar.zst")
printf '%-44s %9.2f %14d\n' "tar --listed-incremental | zstd -3 -T0" "$secs" "$tz"
awk -v s="$s1" -v c="$changed" -v t="$tz" -v a="$t1" -v b="$secs" 'BEGIN {
  printf "  stream / changed data = %.3f\n", s / c;
  printf "  stream / (1.3 x changed + 1 MiB) = %.3f (target <= 1)\n", s / (1.3 * c + 1048576);
  printf "  tar stream / snapdump stream = %.1f (target >= 20)\n", t / s;
  printf "  tar time / snapdump time = %.1f (target >= 4)\n", b / a }'

printf '\n%-44s %9s\n' "chain restore (level 0 + level 1)" "seconds"
fresh_fs
timeit bash -c "'$bin' restore -r -f '$out/s0.sdump' --target '$mnt/r' && '$bin' restore -r -f '$out/s1.sdump' --target '$mnt/r'"
printf '%-44s %9.2f\n' "snapdump restore -r, -r" "$secs"
diff -rq --no-dereference --exclude=.snapdump-restore "$src" "$mnt/r" >/dev/null || { echo "snapdump chain restore differs"; exit 1; }
fresh_fs
mkdir "$mnt/r"
timeit bash -c "zstd -q -d -c '$out/t0.tar.zst' | tar --sparse --xattrs -G -xf - -C '$mnt/r' && zstd -q -d -c '$out/t1.tar.zst' | tar --sparse --xattrs -G -xf - -C '$mnt/r'"
printf '%-44s %9.2f\n' "zstd -d | tar -G -x, twice" "$secs"

#!/usr/bin/env bash
# Level-0 benchmark: snapdump next to `tar --sparse --xattrs -c | zstd -3 -T0`
# on the same generated tree (3 x 1 GiB half-random files, 20,000 small
# files, a 4 GiB sparse file with 64 MiB of data), then restores of both
# into a fresh loop-mounted ext4 each. Needs root (loop mounts).
#
#   scripts/bench.sh [WORKDIR]     (default /var/tmp/snapdump-bench)
#
# The tree is generated once and kept; streams and the ext4 images live on
# a tmpfs so that neither tool is timed against the disk's flushing.
. "$(dirname "$0")/bench-lib.sh"

echo "tree: $(du -s --apparent-size -B1 "$src" | cut -f1) bytes apparent, $(du -s -B1 "$src" | cut -f1) allocated, $(find "$src" | wc -l) entries"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '\n%-34s %9s %14s %10s\n' "level 0" "seconds" "stream bytes" "peak MiB"
warm
for run in 1 2; do
  rm -rf "$out/cat" "$out/l0.sdump"
  timeit "$bin" dump -0 -f "$out/l0.sdump" --catalog "$out/cat" "$src"
  printf '%-34s %9.2f %14d %10d\n' "snapdump dump -0 (run $run)" "$secs" "$(stat -c %s "$out/l0.sdump")" $((kib / 1024))
  rm -f "$out/l0.tar.zst"
  timeit bash -c "tar --sparse --xattrs -cf - -C '$src' . | zstd -q -3 -T0 > '$out/l0.tar.zst'"
  printf '%-34s %9.2f %14d %10s\n' "tar | zstd -3 -T0 (run $run)" "$secs" "$(stat -c %s "$out/l0.tar.zst")" "-"
done

printf '\n%-34s %9s %10s\n' "restore into fresh ext4" "seconds" "peak MiB"
for run in 1 2; do
  fresh_fs
  timeit "$bin" restore -r -f "$out/l0.sdump" --target "$mnt/r"
  printf '%-34s %9.2f %10d\n' "snapdump restore -r (run $run)" "$secs" $((kib / 1024))
  diff -rq --no-dereference --exclude=.snapdump-restore "$src" "$mnt/r" >/dev/null || { echo "snapdump restore differs"; exit 1; }
  fresh_fs
  mkdir "$mnt/r"
  timeit bash -c "zstd -q -d -c '$out/l0.tar.zst' | tar --sparse --xattrs -xf - -C '$mnt/r'"
  printf '%-34s %9.2f %10s\n' "zstd -d | tar -x (run $run)" "$secs" "-"
done
timeit "$bin" verify -f "$out/l0.sdump"
printf '%-34s %9.2f %10d\n' "snapdump verify" "$secs" $((kib / 1024))

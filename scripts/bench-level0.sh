#!/usr/bin/env bash
# Level-0 comparison of issue 19: `snapdump dump -0` next to
# `tar --sparse --xattrs -c | zstd -3 -T0` on two trees, each tool twice,
# alternating, warm page cache, outputs on a tmpfs (snapdump's fsyncs cost
# nothing there, so neither tool pays for durability):
#   - the benchmark tree of scripts/bench.sh (half-random 4 KiB blocks,
#     20,000 small files, a sparse file);
#   - 2 GiB of 64 KiB runs alternating random bytes and written zeros
#     (`gentree runs`), where compression can only lose time.
# Prints seconds, stream bytes, peak RSS and the ratios to tar's.
#
#   scripts/bench-level0.sh [WORKDIR]   (default /var/tmp/snapdump-bench)
. "$(dirname "$0")/bench-lib.sh"
runs=$work/runs
[ -d "$runs" ] || "$gen" runs "$runs" --gib 2
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for tree in "$src" "$runs"; do
  find "$tree" -type f -print0 | xargs -0 cat > /dev/null
  echo
  echo "tree $tree: $(du -s --apparent-size -B1 "$tree" | cut -f1) bytes, $(find "$tree" | wc -l) entries"
  printf '%-28s %9s %14s %9s\n' "" "seconds" "stream bytes" "peak MiB"
  for run in 1 2; do
    rm -rf "$out/cat" "$out/l0.sdump" "$out/l0.tar.zst"
    timeit "$bin" dump -0 -f "$out/l0.sdump" --catalog "$out/cat" "$tree"
    ss=$secs; sb=$(stat -c %s "$out/l0.sdump"); sk=$kib
    timeit bash -c "tar --sparse --xattrs -cf - -C '$tree' . | zstd -q -3 -T0 > '$out/l0.tar.zst'"
    ts=$secs; tb=$(stat -c %s "$out/l0.tar.zst")
    printf '%-28s %9.2f %14d %9d\n' "snapdump dump -0 ($run)" "$ss" "$sb" $((sk / 1024))
    printf '%-28s %9.2f %14d %9s\n' "tar | zstd -3 -T0 ($run)" "$ts" "$tb" "-"
    awk -v a="$ss" -v b="$ts" -v x="$sb" -v y="$tb" 'BEGIN {
      printf "  time ratio %.2f (target <= 0.5), size ratio %.4f (target <= 1)\n", a / b, x / y }'
  done
done

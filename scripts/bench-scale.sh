#!/usr/bin/env bash
# Scale benchmark of issue 19: snapdump next to tar (`--listed-incremental`,
# piped to `zstd -3 -T0`) on a loop-mounted ext4 holding FILES text files
# of 1-16 KiB in DIRS directories plus BIG files of BIG_GIB GiB each:
# level 0, level 1 after `gentree mutate` (1% of the big files' blocks and
# of the small files), an unchanged level 1, chain restore into a fresh
# loop-mounted ext4, `restore -x` of one file; seconds, stream bytes, peak
# RSS, catalog bytes; for each size in SIZES, so growth can be read off.
# Needs root and about 2.5 x the tree's size free under WORKDIR.
#
#   SIZES="100000 1000000" BIG=4 BIG_GIB=1 scripts/bench-scale.sh [WORKDIR]
#   (default WORKDIR /var/tmp/snapdump-scale; the issue's tree is
#   BIG_GIB=8, which needs about 110 GB free)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/var/tmp/snapdump-scale}
sizes=${SIZES:-100000 1000000}
big=${BIG:-4}
big_gib=${BIG_GIB:-1}
cargo build --release --quiet --bin snapdump --example gentree --example catalog_speed
bin=$PWD/target/release/snapdump
gen=$PWD/target/release/examples/gentree
cspeed=$PWD/target/release/examples/catalog_speed
mkdir -p "$work"
src=$work/src.mnt
dst=$work/dst.mnt
out=$work/out
mkdir -p "$src" "$dst" "$out"
cleanup() { umount "$src" 2>/dev/null || true; umount "$dst" 2>/dev/null || true; rm -rf "$out" "$work"/*.img; }
trap cleanup EXIT
timeit() { /usr/bin/time -f "%e %M" -o "$work/t" "$@" >/dev/null; read -r secs kib < "$work/t"; }
mkfs() { # IMG SIZE_BYTES INODES MOUNTPOINT
  umount "$4" 2>/dev/null || true
  rm -f "$1"; truncate -s "$2" "$1"
  mkfs.ext4 -q -F -N "$3" -E lazy_itable_init=0,lazy_journal_init=0 "$1"
  mount -o loop "$1" "$4"
}
row() { printf '%-40s %9.2f %14s %9s\n' "$1" "$2" "$3" "$4"; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem/ {print $2}') GiB"
for n in $sizes; do
  bytes=$(( n * 20 * 1024 + big * big_gib * (1 << 30) + (2 << 30) ))
  inodes=$(( n + n / 5 + 100000 ))
  mkfs "$work/src.img" "$bytes" "$inodes" "$src"
  rm -rf "${out:?}"/*
  "$gen" scale "$src/tree" --files "$n" --dirs $(( n / 100 )) --big "$big" --big-gib "$big_gib"
  sync
  echo
  echo "== $n files in $(( n / 100 )) directories + $big x $big_gib GiB: $(du -s --apparent-size -B1 "$src/tree" | cut -f1) bytes"
  printf '%-40s %9s %14s %9s\n' "" "seconds" "stream bytes" "peak MiB"
  timeit "$bin" dump -0 -f "$out/s0" --catalog "$out/cat" "$src/tree"
  row "snapdump dump -0" "$secs" "$(stat -c %s "$out/s0")" $((kib / 1024))
  timeit bash -c "tar --sparse --xattrs --atime-preserve=system -g '$out/snar' -cf - -C '$src/tree' . | zstd -q -3 -T0 > '$out/t0'"
  row "tar -g | zstd -3 -T0" "$secs" "$(stat -c %s "$out/t0")" "-"
  echo "  catalog: $(du -s -B1 "$out/cat" | cut -f1) bytes"
  sleep 1.2
  timeit "$bin" dump -1 -f "$out/u1" --catalog "$out/cat" "$src/tree"
  row "snapdump dump -1, unchanged" "$secs" "$(stat -c %s "$out/u1")" $((kib / 1024))
  cp "$out/snar" "$out/snar.u"
  timeit bash -c "tar --sparse --xattrs --atime-preserve=system -g '$out/snar.u' -cf - -C '$src/tree' . | zstd -q -3 -T0 > '$out/tu'"
  row "tar -g | zstd, unchanged" "$secs" "$(stat -c %s "$out/tu")" "-"
  changed=$("$gen" mutate "$src/tree" 7)
  sleep 1.2
  echo "  mutation: $changed bytes changed"
  timeit "$bin" dump -2 -f "$out/s1" --catalog "$out/cat" "$src/tree"
  row "snapdump dump -2, 1% changed" "$secs" "$(stat -c %s "$out/s1")" $((kib / 1024))
  timeit bash -c "tar --sparse --xattrs --atime-preserve=system -g '$out/snar' -cf - -C '$src/tree' . | zstd -q -3 -T0 > '$out/t1'"
  row "tar -g | zstd, 1% changed" "$secs" "$(stat -c %s "$out/t1")" "-"
  echo "  catalog: $(du -s -B1 "$out/cat" | cut -f1) bytes"
  cp -a "$out/cat" "$out/cat.copy"
  "$cspeed" "$(ls -d "$out"/cat.copy/sources/*)" | sed 's/^/  catalog parts: /'
  rm -rf "$out/cat.copy"
  # Chain restores into a fresh ext4 each (the level 0, the unchanged
  # level 1 and the 1% level 2; tar: its three archives). The default
  # finish builds each increment's tree beside the target and swaps it in
  # (atomic: a changed file is copied first, ext4 has no reflinks), so its
  # file system gets room for those copies; --inplace writes into the files.
  for mode in "" --inplace; do
    mkfs "$work/dst.img" $(( bytes * 2 )) "$inodes" "$dst"
    total=0 peak=0 steps=""
    for s in s0 u1 s1; do
      timeit "$bin" restore -r $mode -f "$out/$s" --target "$dst/r"
      total=$(echo "$total + $secs" | bc) steps="$steps $s $secs"
      (( kib > peak )) && peak=$kib
    done
    timeit sync -f "$dst/r"
    total=$(echo "$total + $secs" | bc)
    row "snapdump chain restore ${mode:-(atomic)}" "$total" "" $((peak / 1024))
    echo "   ($steps, sync $secs)"
    diff -rq --no-dereference --exclude=.snapdump-restore "$src/tree" "$dst/r" > /dev/null || echo "  snapdump restore differs"
  done
  mkfs "$work/dst.img" "$bytes" "$inodes" "$dst"
  mkdir "$dst/r"
  timeit bash -c "for t in t0 tu t1; do zstd -q -d -c '$out/'\$t | tar --sparse --xattrs -G -xf - -C '$dst/r' || exit 1; done; sync -f '$dst/r'"
  row "zstd -d | tar -G -x chain (3 archives)" "$secs" "" "-"
  umount "$dst"
  one=small/d001/f$(printf %07d 1).txt
  rm -rf "$out/x"
  timeit "$bin" restore -x -f "$out/s0" --target "$out/x" "$one"
  row "snapdump restore -x one file" "$secs" "" $((kib / 1024))
  mkdir -p "$out/xt"
  timeit bash -c "zstd -q -d -c '$out/t0' | tar -xf - -C '$out/xt' './$one'"
  row "zstd -d | tar -x one file" "$secs" "" "-"
  cmp "$src/tree/$one" "$out/x/$one" && cmp "$src/tree/$one" "$out/xt/$one"
  umount "$src"
done

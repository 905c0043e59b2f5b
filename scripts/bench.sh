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
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/var/tmp/snapdump-bench}
src=$work/src
cargo build --release --quiet --bin snapdump --example gentree
bin=$PWD/target/release/snapdump
gen=$PWD/target/release/examples/gentree
[ -d "$src/big" ] || { echo "generating $src"; mkdir -p "$work"; "$gen" create "$src"; }

out=$(mktemp -d /dev/shm/snapdump-bench.XXXXXX)
mnt=$out/mnt
mkdir -p "$mnt"
cleanup() { umount "$mnt" 2>/dev/null || true; rm -rf "$out"; }
trap cleanup EXIT

# /usr/bin/time -f: wall seconds and peak RSS (KiB) of the whole command.
timeit() { /usr/bin/time -f "%e %M" -o "$out/t" "$@" >/dev/null; read -r secs kib < "$out/t"; }
warm() { find "$src" -type f -print0 | xargs -0 cat > /dev/null; }
fresh_fs() {
  umount "$mnt" 2>/dev/null || true
  rm -f "$out/fs.img"
  truncate -s 12G "$out/fs.img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$out/fs.img"
  mount -o loop "$out/fs.img" "$mnt"
}

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

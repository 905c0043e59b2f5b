#!/usr/bin/env bash
# Volume benchmark on the tree of scripts/bench.sh: receive a level 0 and a
# level 1 into a volume on a fresh loop-mounted ext4 (next to restore -r
# into a directory there), then read the volume back: volume check, volume
# extract into a fresh ext4 (next to zstd -d | tar -x), export-tar, and a
# dump from the volume. Needs root (loop mounts). Mutates the tree.
#
#   scripts/bench-volume.sh [WORKDIR]   (default /var/tmp/snapdump-bench)
. "$(dirname "$0")/bench-lib.sh"
seed=$(date +%s)
sleep 1.2
warm
"$bin" dump -0 -f "$out/s0.sdump" --catalog "$out/cat" "$src"
changed=$("$gen" mutate "$src" "$seed")
sleep 1.2
"$bin" dump -1 -f "$out/s1.sdump" --catalog "$out/cat" "$src"
tar --sparse --xattrs -cf - -C "$src" . | zstd -q -3 -T0 > "$out/t.tar.zst"
echo "level 0 stream $(stat -c %s "$out/s0.sdump") bytes, level 1 $(stat -c %s "$out/s1.sdump") bytes ($changed bytes changed)"

printf '\n%-46s %9s %10s\n' "into a fresh ext4" "seconds" "peak KiB"
fresh_fs
"$bin" volume create "$mnt/v.vol"
timeit "$bin" restore -r -f "$out/s0.sdump" --volume "$mnt/v.vol"
printf '%-46s %9.2f %10d\n' "restore -r --volume (level 0)" "$secs" "$kib"
timeit "$bin" restore -r -f "$out/s1.sdump" --volume "$mnt/v.vol"
printf '%-46s %9.2f %10d\n' "restore -r --volume (level 1)" "$secs" "$kib"
alloc=$(( $(stat -c %b "$mnt/v.vol") * 512 ))
live=$(du -s --block-size=1 "$src" | cut -f1)
echo "  volume: $(stat -c %s "$mnt/v.vol") bytes long, $alloc allocated, for two snapshots of a tree of $live allocated bytes"
timeit "$bin" volume check "$mnt/v.vol"
printf '%-46s %9.2f %10d\n' "volume check (every block's checksum)" "$secs" "$kib"
cp "$mnt/v.vol" "$out/v.vol"
fresh_fs
# Synced, as the volume is: equal durability.
timeit bash -c "'$bin' restore -r -f '$out/s0.sdump' --target '$mnt/r' && sync -f '$mnt/r'"
printf '%-46s %9.2f %10d\n' "restore -r into a directory + sync (level 0)" "$secs" "$kib"

printf '\n%-46s %9s %10s\n' "reading the volume back (fresh ext4)" "seconds" "peak KiB"
fresh_fs
sync; echo 3 > /proc/sys/vm/drop_caches
timeit "$bin" volume extract "$out/v.vol" "$mnt/x"
printf '%-46s %9.2f %10d\n' "volume extract (newest)" "$secs" "$kib"
diff -rq --no-dereference "$src" "$mnt/x" >/dev/null || { echo "volume extract differs from the source"; exit 1; }
fresh_fs
mkdir "$mnt/t"
timeit bash -c "zstd -q -d -c '$out/t.tar.zst' | tar --sparse --xattrs -xf - -C '$mnt/t'"
printf '%-46s %9.2f %10d\n' "zstd -d | tar -x (same tree)" "$secs" "$kib"
timeit bash -c "'$bin' volume export-tar '$out/v.vol' > /dev/null"
printf '%-46s %9.2f %10d\n' "volume export-tar > /dev/null" "$secs" "$kib"
timeit "$bin" dump -0 -f "$out/from-vol.sdump" "$out/v.vol"
printf '%-46s %9.2f %10d\n' "dump -0 from the volume" "$secs" "$kib"
timeit "$bin" dump -0 --image S2-S1 -f "$out/inc-vol.sdump" "$out/v.vol"
printf '%-46s %9.2f %10d\n' "dump --image S2-S1 from the volume" "$secs" "$kib"
echo "  increment from the volume: $(stat -c %s "$out/inc-vol.sdump") bytes (tree level 1: $(stat -c %s "$out/s1.sdump"))"

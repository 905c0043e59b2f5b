#!/usr/bin/env bash
# Change tracker benchmark: the tree of scripts/bench.sh copied onto a
# fresh loop-mounted ext4, then, side by side in one run, twice:
#   - level 1 of the unchanged tree with the tracker, without it
#     (--no-tracker, a second catalog), and tar --listed-incremental;
#   - the same after `gentree mutate` (1% of the blocks of each big file
#     rewritten in place, about 1% of the small files rewritten, added and
#     deleted): time, bytes read from the source, stat-family calls;
#   tar runs with --atime-preserve=system, as snapdump opens files with
#   O_NOATIME: neither moves the other's access times (which are metadata
#   an increment records);
#     timed twice: right after the change (its writes still dirty in the
#     page cache, which on ext4 the tracker's swap leaves to the kernel),
#     and after a third change once `sync` has written it, as a dump hours
#     after the writes finds it;
#   - the daemon's peak RSS with a million marked page ranges;
#   - a write benchmark (dd, 2 GiB with fdatasync; 200,000 random 4 KiB
#     pwrites) with and without a tracker running.
# Needs root (loop mounts, fanotify, BPF).
#
#   scripts/bench-track.sh [WORKDIR]   (default /var/tmp/snapdump-bench)
#   PARTS="dumps daemon writes" (the default: all three) runs only the
#   parts named; ROUNDS=N sets the write benchmark's rounds (default 5).
. "$(dirname "$0")/bench-lib.sh"
# Trackers keep their file system busy: stop them before it is unmounted.
stop_trackers() {
  for c in "$out/cat" "$out/cat2"; do "$bin" track stop --catalog "$c" >/dev/null 2>&1 || true; done
  cleanup
}
trap stop_trackers EXIT
parts=${PARTS:-dumps daemon writes}
part() { case " $parts " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if part dumps; then
fs_size=10G fresh_fs
echo "copying the tree onto a fresh ext4"
cp -a "$src" "$mnt/src"
s=$mnt/src
entries=$(find "$s" | wc -l)
# rchar of a command: the kernel adds a reaped child's counters to its
# parent's, so the shell's rchar after the command is the command's.
rchar() { sh -c '"$@" >/dev/null; grep ^rchar /proc/$$/io | cut -d" " -f2' sh "$@"; }
# Bytes a command read from files under the source (strace: pread64 and
# read on descriptors opened there), so the catalog, the tracker's deltas
# and the dump's own spool are not counted.
srcread() { # $1: source dir, then the command
  local dir=$1; shift
  strace -f -e trace=openat,read,pread64,close -o "$out/sread" "$@" >/dev/null
  python3 - "$dir" "$out/sread" <<'PY'
import re, sys
src, fds, total = sys.argv[1], {}, 0
for line in open(sys.argv[2]):
    if 'openat(' in line and line.rstrip().split(' = ')[-1].isdigit():
        fd = int(line.rstrip().split(' = ')[-1])
        path = re.search(r'"([^"]*)"', line).group(1)
        fds[fd] = not (path.startswith('/') and not path.startswith(src))
        continue
    m = re.search(r'(?:pread64|read)\((\d+),.* = (\d+)$', line.rstrip())
    if m and fds.get(int(m.group(1))):
        total += int(m.group(2))
    m = re.search(r'close\((\d+)\)', line)
    if m:
        fds.pop(int(m.group(1)), None)
print(total)
PY
}
stats() {
  strace -f -c -o "$out/strace" "$@" >/dev/null
  awk '$NF ~ /^(newfstatat|statx|fstat|lstat|stat)$/ {s+=$4} END {print s+0}' "$out/strace"
}

"$bin" track start --catalog "$out/cat" "$s" >/dev/null
"$bin" dump -0 -f "$out/a0" --catalog "$out/cat" "$s"
"$bin" dump -0 -f "$out/b0" --catalog "$out/catw" --no-tracker "$s"
# tar -g updates its snapshot file: each later tar run is an increment on
# the tar run before it, as each snapdump level is on the dump before.
tar --sparse --xattrs --atime-preserve=system -g "$out/snar" -cf - -C "$s" . | zstd -q -3 -T0 > "$out/t0.tar.zst"
n=1
drop_source_cache() {
  find "$s" -type f -print0 | xargs -0 python3 -c 'import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)'
  echo "  (the source's cached pages dropped before this mutation)"
}
row() { printf '%-44s %9s %14s %12s %10s\n' "$@"; }

level1() { # $1: title
  row "$1" seconds "read bytes" "stat calls" stream
  local lvl=$((n < 9 ? n : 9))
  # Each from a clean page cache: the steps before (the level-0 reads'
  # atime updates) leave dirty inodes that a tracker's swap would
  # otherwise write back on this one's account.
  sync
  timeit "$bin" dump -$lvl -f "$out/a$n" --catalog "$out/cat" "$s"
  local ta=$secs
  sync
  row "snapdump dump -$lvl, tracker" "$secs" "-" "-" "$(stat -c %s "$out/a$n")"
  timeit "$bin" dump -$lvl -f "$out/b$n" --catalog "$out/catw" --no-tracker "$s"
  local tb=$secs
  sync
  row "snapdump dump -$lvl --no-tracker" "$secs" "-" "-" "$(stat -c %s "$out/b$n")"
  timeit bash -c "tar --sparse --xattrs --atime-preserve=system -g '$out/snar' -cf - -C '$s' . | zstd -q -3 -T0 > '$out/t$n.tar.zst'"
  local tt=$secs
  row "tar --listed-incremental | zstd -3 -T0" "$secs" "-" "-" "$(stat -c %s "$out/t$n.tar.zst")"
  awk -v a="$ta" -v b="$tb" -v t="$tt" 'BEGIN {
    printf "  tracker %.2f s (target < 0.1 s); tracker / walk = %.3f; tracker / tar = %.2f\n", a, a / b, a / t }'
  n=$((n + 1))
}

# The three dumps of the change just made, timed side by side.
timed_dumps() { # $1: title
  local lvl=$((n < 9 ? n : 9)) t0 t1 t2 t3
  t0=$(date +%s.%N)
  "$bin" dump -$lvl -f "$out/a$n" --catalog "$out/cat" "$s" >/dev/null
  t1=$(date +%s.%N)
  "$bin" dump -$lvl -f "$out/b$n" --catalog "$out/catw" --no-tracker "$s" >/dev/null
  t2=$(date +%s.%N)
  bash -c "tar --sparse --xattrs --atime-preserve=system -g '$out/snar' -cf - -C '$s' . | zstd -q -3 -T0 > '$out/t$n.tar.zst'"
  t3=$(date +%s.%N)
  row "$1" seconds "" "" stream
  row "snapdump dump -$lvl, tracker" "$(echo "$t1 - $t0" | bc)" "" "" "$(stat -c %s "$out/a$n")"
  row "snapdump dump -$lvl --no-tracker" "$(echo "$t2 - $t1" | bc)" "" "" "$(stat -c %s "$out/b$n")"
  row "tar --listed-incremental | zstd -3 -T0" "$(echo "$t3 - $t2" | bc)" "" "" "$(stat -c %s "$out/t$n.tar.zst")"
  awk -v a="$(echo "$t1 - $t0" | bc)" -v t="$(echo "$t3 - $t2" | bc)" 'BEGIN {
    printf "  tracker / tar time = %.3f (target <= 0.05)\n", a / t }'
  n=$((n + 1))
}

# Stat calls, measured on extra dumps of the same state (nothing changed
# since the one before).
measure() {
  local lvl=$((n < 9 ? n : 9))
  local sa sb
  sa=$(stats "$bin" dump -$lvl -f "$out/m$n" --catalog "$out/cat" "$s")
  sb=$(stats "$bin" dump -$lvl -f "$out/w$n" --catalog "$out/catw" --no-tracker "$s")
  n=$((n + 1))
  echo "  stat-family calls of an unchanged level: $sa with the tracker, $sb without ($entries entries)"
}

# Round 1 mutates files whose pages the copy and the level 0 left cached
# in large folios (a 4 KiB write dirties, and the tracker marks, its whole
# folio); round 2 first drops the source's cached pages, as for files not
# read or written since they were last dumped.
for round in 1 2; do
  echo; echo "== round $round =="
  level1 "level 1 of an unchanged tree ($entries entries)"
  # Once: the counts are the same every round, and levels stop at 9.
  if [ $round = 1 ]; then measure; fi
  if [ $round = 2 ]; then drop_source_cache; fi
  # The change, then the dumps of it, timed.
  changed=$("$gen" mutate "$s" "$(date +%s)$round")
  sleep 1.2
  echo "  changed data: $changed bytes"
  timed_dumps "level 1 after the mutation"
  # A third change, written back before the dumps (`sync`), timed the same.
  "$gen" mutate "$s" "$(( $(date +%s) + 2000 + round ))" >/dev/null
  sync
  timed_dumps "the same after a third change, synced first"
  # A second change of the same kind, and the bytes each dump of it reads
  # from the source (under strace, so not timed).
  if [ $round = 2 ]; then drop_source_cache; fi
  changed=$("$gen" mutate "$s" "$(( $(date +%s) + 1000 + round ))")
  sleep 1.2
  lvl=$((n < 9 ? n : 9))
  sa=$(srcread "$s" "$bin" dump -$lvl -f "$out/m$n" --catalog "$out/cat" "$s")
  sb=$(srcread "$s" "$bin" dump -$lvl -f "$out/w$n" --catalog "$out/catw" --no-tracker "$s")
  # tar's snapshot file follows the same change.
  tar --sparse --xattrs --atime-preserve=system -g "$out/snar" -cf - -C "$s" . | zstd -q -3 -T0 > /dev/null
  echo "  a second change of $changed bytes: read from the source with the tracker $sa bytes, without $sb"
  awk -v r="$sa" -v c="$changed" 'BEGIN { printf "  tracker read / changed = %.2f (target <= 1.5)\n", r / c }'
  n=$((n + 1))
done

echo; echo "== the chain restores =="
rm -rf "$out/r"
for i in $(seq 0 $((n - 1))); do
  [ -f "$out/a$i" ] && "$bin" restore -r -f "$out/a$i" --target "$out/r" >/dev/null
  [ -f "$out/m$i" ] && "$bin" restore -r -f "$out/m$i" --target "$out/r" >/dev/null
done
diff -rq --no-dereference --exclude=.snapdump-restore "$s" "$out/r" >/dev/null && echo "tracker chain restores identical" || { echo "tracker chain restore differs"; exit 1; }
rm -rf "$out/r"
"$bin" track stop --catalog "$out/cat" >/dev/null
rm -f "$out"/a[0-9]* "$out"/b[0-9]* "$out"/m[0-9]* "$out"/w[0-9]* "$out"/t*.tar.zst
umount "$mnt"; rm -f "$out/fs.img"
fi

fs_size=12G fresh_fs
mkdir "$mnt/d"
if part daemon; then
echo; echo "== the daemon with a million marked page ranges =="
"$bin" track start --catalog "$out/cat2" "$mnt/d" >/dev/null
pid=$("$bin" track status --json --catalog "$out/cat2" "$mnt/d" | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["pid"])')
python3 - "$mnt/d" <<'EOF'
import os, sys
for f in range(500):
    fd = os.open(f"{sys.argv[1]}/sparse{f}", os.O_WRONLY | os.O_CREAT, 0o644)
    for i in range(2000):
        os.pwrite(fd, b"x", i * 8192)
    os.close(fd)
EOF
"$bin" track status --catalog "$out/cat2" "$mnt/d"
t0=$(date +%s.%N)
"$bin" dump -0 -f /dev/null --exclude "sparse*" --catalog "$out/cat2" "$mnt/d" >/dev/null
t1=$(date +%s.%N)
echo "  a dump (of nothing: the files are excluded) whose swap takes 1,000,000 ranges: $(echo "$t1 - $t0" | bc) s; delta file $(stat -c %s "$out/cat2"/sources/*/tracker/delta.1) bytes"
echo "  daemon peak RSS: $(grep VmHWM /proc/$pid/status | awk '{print $2}') KiB (target < 65536)"
"$bin" track stop --catalog "$out/cat2" >/dev/null
rm -f "$mnt"/d/sparse*
fi

part writes || exit 0
# A fresh file system: the million ranges' 4 GiB of sparse writes would
# otherwise still be settling (in the image on tmpfs) under these runs.
umount "$mnt"; rm -f "$out/fs.img"
fs_size=12G fresh_fs
mkdir "$mnt/d"
echo; echo "== writes with and without a tracker (${ROUNDS:-5} rounds, alternating; medians) =="
# Into the page cache only (no fdatasync), so the programs' and fanotify's
# cost per write is measured, not the loop device's writeback.
"$bin" track start --catalog "$out/cat2" "$mnt/d" >/dev/null
"$bin" track stop --catalog "$out/cat2" >/dev/null
for round in $(seq "${ROUNDS:-5}"); do
  for with in no yes; do
    [ $with = yes ] && "$bin" track start --catalog "$out/cat2" "$mnt/d" >/dev/null
    sync
    t0=$(date +%s.%N)
    dd if=/dev/zero of="$mnt/d/w" bs=1M count=1024 status=none
    t1=$(date +%s.%N)
    python3 - "$mnt/d/r" <<'EOF'
import os, sys, random
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
os.ftruncate(fd, 1 << 30)
r = random.Random(7); b = b"y" * 4096
for i in range(200_000):
    os.pwrite(fd, b, r.randrange(1 << 18) * 4096)
os.close(fd)
EOF
    t2=$(date +%s.%N)
    echo "dd $with $(echo "$t1 - $t0" | bc)" >> "$out/writes"
    echo "pw $with $(echo "$t2 - $t1" | bc)" >> "$out/writes"
    [ $with = yes ] && "$bin" track stop --catalog "$out/cat2" >/dev/null
    rm -f "$mnt/d/w" "$mnt/d/r"
  done
done
python3 - "$out/writes" <<'EOF'
import sys, statistics, collections
t = collections.defaultdict(list)
for line in open(sys.argv[1]):
    k, w, v = line.split(); t[(k, w)].append(float(v))
for k, name in (("dd", "dd 1 GiB, bs=1M, page cache"), ("pw", "200,000 random 4 KiB pwrites, page cache")):
    no, yes = statistics.median(t[(k, "no")]), statistics.median(t[(k, "yes")])
    print(f"{name:44s} without {no:.3f} s, with the tracker {yes:.3f} s: {100 * (yes / no - 1):+.1f}% (target < 2%)")
    print(f"{'':44s} runs without {' '.join(f'{x:.2f}' for x in t[(k, 'no')])}; with {' '.join(f'{x:.2f}' for x in t[(k, 'yes')])}")
EOF

#!/usr/bin/env bash
# Applying a level 1 (restore -r of an increment onto a restored level 0):
# wall time, peak RSS, and the extra space the apply needs on the target
# file system beyond what it holds before and after, for this build next to
# an older one (SNAPDUMP_BEFORE=/path/to/snapdump; each build dumps and
# applies its own streams, of the same tree states). The tree is
# scripts/bench.sh's, changed by `gentree mutate` (1% of the 4 KiB blocks
# of each big file rewritten in place, ~1% of the small files rewritten,
# added and deleted). Each apply runs on a freshly made, loop-mounted ext4
# holding the restored level 0, twice per build, alternating; with each of
# the two finishes of this build (the default, which builds the new tree
# beside the target and swaps it in, copying the files it changes first;
# and --inplace), on ext4 and, when mkfs.xfs is installed, on xfs (which
# clones instead of copying). Needs root.
#
#   SNAPDUMP_BEFORE=/tmp/snapdump-before scripts/bench-apply.sh [WORKDIR]
. "$(dirname "$0")/bench-lib.sh"
before=${SNAPDUMP_BEFORE:-}
builds=("after:$bin")
[ -n "$before" ] && builds=("before:$before" "${builds[@]}")
seed=$(date +%s)
# Files changed less than a second before a dump are compared block by
# block at the next dump (coarse file clocks): let the tree settle first.
"$gen" mutate "$src" "$seed" > /dev/null
sleep 1.2
warm
for b in "${builds[@]}"; do
  name=${b%%:*}; exe=${b#*:}
  "$exe" dump -0 -f "$out/$name.s0" --catalog "$out/$name.cat" "$src"
done
changed=$("$gen" mutate "$src" "$((seed + 1))")
sleep 1.2
for b in "${builds[@]}"; do
  name=${b%%:*}; exe=${b#*:}
  "$exe" dump -1 -f "$out/$name.s1" --catalog "$out/$name.cat" "$src"
done
echo "changed data: $changed bytes; level-1 streams: $(for b in "${builds[@]}"; do n=${b%%:*}; printf '%s %d  ' "$n" "$(stat -c %s "$out/$n.s1")"; done)"
used() { df --output=used -B1 "$mnt" | tail -1; }
fs_types="ext4"
command -v mkfs.xfs > /dev/null && fs_types="ext4 xfs"
for fs_type in $fs_types; do
printf '\n%-36s %9s %10s %14s %14s\n' "level-1 apply (fresh $fs_type)" "seconds" "peak MiB" "extra bytes" "extra/changed"
for run in 1 2; do
  for b in "${builds[@]}"; do
   name=${b%%:*}; exe=${b#*:}
   # A build without --inplace has only its in-place finish.
   finishes=("")
   only=in-place
   "$exe" restore --help | grep -q -- --inplace && finishes=("" "--inplace") only=atomic
   for finish in "${finishes[@]}"; do
    fresh_fs
    "$exe" restore -r -f "$out/$name.s0" --target "$mnt/r"
    sync
    start=$(used)
    # Sample the space used while the apply runs; the peak over the larger
    # of before and after is what the apply needed on top.
    ( while :; do used; sleep 0.005; done ) > "$out/samples" &
    sampler=$!
    # shellcheck disable=SC2086 # $finish is one word or none
    timeit "$exe" restore -r -f "$out/$name.s1" --target "$mnt/r" $finish
    kill "$sampler"; wait "$sampler" 2>/dev/null || true
    sync
    end=$(used)
    peak=$(sort -n "$out/samples" | tail -1)
    base=$(( start > end ? start : end ))
    extra=$(( peak > base ? peak - base : 0 ))
    printf '%-36s %9.2f %10d %14d %14.2f\n' "$name ${finish:-$only} (run $run)" "$secs" $((kib / 1024)) "$extra" \
      "$(awk -v e="$extra" -v c="$changed" 'BEGIN { print e / c }')"
    diff -rq --no-dereference --exclude=.snapdump-restore "$src" "$mnt/r" >/dev/null \
      || { echo "$name: the applied tree differs from the source"; exit 1; }
   done
  done
done
done

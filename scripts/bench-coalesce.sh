#!/usr/bin/env bash
# Coalescing benchmark: a level 0 and 5 increments (each after
# `gentree mutate`: 1% of the big files' blocks and about 1% of the small
# files changed) coalesced into a synthetic full (records copied whole with
# gaps, the default, and with --recompress), next to a fresh `dump -0` of
# the same tree, in the same run, twice each; both write a
# file on the same tmpfs and fsync it. Also: the source reads of each
# (opens under the tree, counted with strace), and the merged increment
# (levels 1-5 in one) next to the sum of the increments it replaces.
#
#   scripts/bench-coalesce.sh [WORKDIR]   (default /var/tmp/snapdump-bench)
. "$(dirname "$0")/bench-lib.sh"
seed=$(date +%s)
sleep 1.2
warm
"$bin" dump -0 -f "$out/s0.sdump" --catalog "$out/cat" "$src"
inputs=(-f "$out/s0.sdump")
incs=()
for l in 1 2 3 4 5; do
  "$gen" mutate "$src" "$((seed + l))" > /dev/null
  sleep 1.2
  "$bin" dump -$l -f "$out/s$l.sdump" --catalog "$out/cat" "$src"
  inputs+=(-f "$out/s$l.sdump")
  incs+=(-f "$out/s$l.sdump")
done
warm
printf '\n%-46s %9s %9s %14s\n' "synthetic full of levels 0-5" "seconds" "peak MiB" "stream bytes"
for run in 1 2; do
  rm -f "$out/fresh.sdump"; rm -rf "$out/cat2"
  timeit "$bin" dump -0 -f "$out/fresh.sdump" --catalog "$out/cat2" "$src"
  fresh=$secs; fresh_kib=$kib
  printf '%-46s %9.2f %9d %14d\n' "snapdump dump -0 (fresh catalog), run $run" "$secs" "$((kib / 1024))" "$(stat -c %s "$out/fresh.sdump")"
  rm -f "$out/synth.sdump"
  /usr/bin/time -f "%e %M" -o "$out/t" "$bin" coalesce --json "${inputs[@]}" -o "$out/synth.sdump" > "$out/synth.json"
  read -r secs kib < "$out/t"
  printf '%-46s %9.2f %9d %14d\n' "snapdump coalesce -f s0..s5, run $run" "$secs" "$((kib / 1024))" "$(stat -c %s "$out/synth.sdump")"
  awk -v a="$secs" -v b="$fresh" 'BEGIN { printf "  coalesce / dump -0 time = %.2f (target <= 0.5)\n", a / b }'
  echo "  blocks copied $(jq .blocks_copied "$out/synth.json") of $(jq .blocks_carried "$out/synth.json"), gap bytes $(jq .gap_bytes "$out/synth.json")"
  rm -f "$out/squeezed.sdump"
  timeit "$bin" coalesce --recompress "${inputs[@]}" -o "$out/squeezed.sdump"
  printf '%-46s %9.2f %9d %14d\n' "snapdump coalesce --recompress, run $run" "$secs" "$((kib / 1024))" "$(stat -c %s "$out/squeezed.sdump")"
done
rm -f "$out/synth2.sdump"
strace -f -e trace=openat -o "$out/strace" "$bin" coalesce "${inputs[@]}" -o "$out/synth2.sdump" >/dev/null 2>&1
echo "  source files opened by coalesce: $(grep -c "\"$src" "$out/strace" || true)"
"$bin" verify -f "$out/synth.sdump"
cmp <("$bin" restore -t -f "$out/synth.sdump") <("$bin" restore -t -f "$out/fresh.sdump") \
  && echo "  synthetic full lists exactly as the fresh dump -0"

printf '\n%-46s %14s\n' "levels 1-5 as one increment" "stream bytes"
sum=0
for l in 1 2 3 4 5; do sum=$((sum + $(stat -c %s "$out/s$l.sdump"))); done
timeit "$bin" coalesce "${incs[@]}" -o "$out/merged.sdump"
printf '%-46s %14d\n' "the five increments, summed" "$sum"
printf '%-46s %14d  (%.2f s)\n' "snapdump coalesce -f s1..s5" "$(stat -c %s "$out/merged.sdump")" "$secs"

printf '\n%-46s %14s\n' "incremental mirror on the level 0" "bytes"
"$bin" mirror create --base "$out/s0.sdump" "$out/mirror" > /dev/null
timeit "$bin" mirror add "$out/mirror" "${incs[@]}"
add_secs=$secs
"$bin" mirror status --json "$out/mirror" > "$out/mirror.json"
held=$(jq .bytes_held "$out/mirror.json"); disk=$(jq .disk_bytes "$out/mirror.json")
printf '%-46s %14d\n' "the five increments, summed" "$sum"
printf '%-46s %14d  (add of all five: %.2f s)\n' "mirror on disk (blocks file + state)" "$disk" "$add_secs"
printf '%-46s %14d\n' "  of which blocks held" "$held"
awk -v d="$disk" -v s="$sum" 'BEGIN { printf "  mirror / increments = %.2f\n", d / s }'
rm -f "$out/reint.sdump"
timeit "$bin" mirror reintegrate "$out/mirror" --base "$out/s0.sdump" -o "$out/reint.sdump"
printf '%-46s %9.2f s\n' "mirror reintegrate (synthetic full)" "$secs"
cmp <("$bin" restore -t -f "$out/reint.sdump") <("$bin" restore -t -f "$out/fresh.sdump") \
  && echo "  reintegrated full lists exactly as the fresh dump -0"

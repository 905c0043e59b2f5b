#!/usr/bin/env bash
# Policy runs to each medium on the tree of scripts/bench.sh: a level 0
# and an unchanged level 1 by `snapdump run`, with streams as files in a
# directory, appended to a virtual tape, and received into a volume, each
# side by side with the same dump by hand to that medium (`dump -f FILE`,
# `dump --append -f TAPE`, `dump -f - | restore -r --volume`) and with
# `tar | zstd -3 -T0` to a file. Everything is written to a tmpfs (so the
# disk's flushing times nothing), each line twice.
#
#   scripts/bench-policy-media.sh [WORKDIR]   (default /var/tmp/snapdump-bench)
. "$(dirname "$0")/bench-lib.sh"
warm
policy() { # NAME STREAMS-LINES -> $out/NAME/pol.toml
  mkdir -p "$out/$1"
  cat > "$out/$1/pol.toml" <<EOF
source = "$src"
catalog = "$out/$1/cat"

[streams]
dir = "$out/$1/state"
$2

[schedule]
every = "1d"
levels = [0, 1]

[keep]
last = 3
EOF
}
row() { printf '%-44s %7.2f s %9d KiB\n' "$1" "$secs" "$kib"; }
printf '%-44s %9s %13s\n' "what" "seconds" "peak RSS"
for round in 1 2; do
  echo "round $round"
  rm -rf "${out:?}"/dir "$out"/tape "$out"/vol "$out"/hand "$out"/t.tar.zst
  policy dir ""
  policy tape "tape = \"$out/tape/drive.tap\""
  policy vol "volume = \"$out/vol/home.vol\""
  for m in dir tape vol; do
    timeit "$bin" run --quiet --at 2027-01-01T03:00:00Z "$out/$m/pol.toml"
    row "run, level 0 ($m)"
    timeit "$bin" run --quiet --at 2027-01-02T03:00:00Z "$out/$m/pol.toml"
    row "run, level 1 of the unchanged tree ($m)"
    rm -rf "${out:?}/$m"
  done
  mkdir -p "$out/hand"
  timeit "$bin" dump -0 -f "$out/hand/s0.sdump" --catalog "$out/hand/c1" "$src"
  row "dump -0 -f FILE by hand"
  rm -f "$out/hand/s0.sdump"
  timeit "$bin" dump -0 --append -f "$out/hand/drive.tap" --catalog "$out/hand/c2" "$src"
  row "dump -0 --append -f TAPE by hand"
  rm -f "$out/hand/drive.tap"
  "$bin" volume create "$out/hand/v.vol"
  timeit bash -c "'$bin' dump -0 -f - --catalog '$out/hand/c3' '$src' | '$bin' restore -r -f - --volume '$out/hand/v.vol'"
  row "dump -0 -f - | restore -r --volume by hand"
  rm -rf "${out:?}/hand"
  timeit bash -c "tar --sparse --xattrs -cf - -C '$src' . | zstd -q -3 -T0 > '$out/t.tar.zst'"
  row "tar | zstd -3 -T0 > FILE"
  rm -f "$out/t.tar.zst"
done

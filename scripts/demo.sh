#!/usr/bin/env bash
# Builds snapdump, dumps a small sample tree at level 0, verifies the
# stream, restores it into a fresh directory and compares the two trees;
# then a level 1, single files as of each snapshot, and both snapshots in a
# volume that feeds a second one.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$PWD/target/release/snapdump
work=$(mktemp -d /tmp/snapdump-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
src=$work/src
mkdir -p "$src/docs" "$src/data/empty"
printf 'hello from snapdump\n' > "$src/docs/readme.txt"
seq 1 100000 > "$src/data/numbers.txt"
head -c 3000000 /dev/urandom > "$src/data/random.bin"
truncate -s 100M "$src/data/sparse.img"; printf 'tail' >> "$src/data/sparse.img"
ln -s docs/readme.txt "$src/link"
ln "$src/data/numbers.txt" "$src/docs/numbers-hardlink.txt"
mkfifo "$src/fifo"

echo "== dump -0 of $src"
"$bin" dump -0 -f "$work/level0.sdump" --catalog "$work/catalog" "$src"
echo "== verify"
"$bin" verify -f "$work/level0.sdump"
echo "== list"
"$bin" restore -t -f "$work/level0.sdump"
echo "== restore -r"
"$bin" restore -r -f "$work/level0.sdump" --target "$work/restored"
echo "== snapshots"
"$bin" snapshots --catalog "$work/catalog"
echo "== compare"
diff -r --no-dereference --exclude=.snapdump-restore --exclude=fifo "$src" "$work/restored"
[ -p "$work/restored/fifo" ]
[ "$(stat -c '%a %s %b %Y' "$src/data/sparse.img")" = "$(stat -c '%a %s %b %Y' "$work/restored/data/sparse.img")" ]
echo "== level 1 after a change, then one file as of each snapshot"
printf 'edited\n' >> "$src/docs/readme.txt"
"$bin" dump -1 -f "$work/level1.sdump" --catalog "$work/catalog" "$src"
"$bin" restore -C -f "$work/level0.sdump" --target "$src" || echo "(restore -C: the live tree differs from snapshot 1, as it should)"
"$bin" restore -x -f "$work/level0.sdump" -f "$work/level1.sdump" --at 1 --target "$work/v1" docs/readme.txt
"$bin" restore -x -f "$work/level0.sdump" -f "$work/level1.sdump" --target "$work/v2" docs/readme.txt
[ "$(cat "$work/v1/docs/readme.txt")" = "hello from snapdump" ]
cmp "$src/docs/readme.txt" "$work/v2/docs/readme.txt"
"$bin" restore -C -f "$work/level0.sdump" -f "$work/level1.sdump" --target "$src"
"$bin" history -f "$work/level0.sdump" -f "$work/level1.sdump" docs/readme.txt
echo "== both snapshots in a volume, extracted, then fed to a second volume"
"$bin" volume create "$work/a.vol"
"$bin" restore -r -f "$work/level0.sdump" -f "$work/level1.sdump" --volume "$work/a.vol"
"$bin" volume snapshots "$work/a.vol"
"$bin" volume check "$work/a.vol"
"$bin" volume extract "$work/a.vol@1" "$work/vol1" docs/readme.txt
[ "$(cat "$work/vol1/docs/readme.txt")" = "hello from snapdump" ]
"$bin" volume create --compact "$work/b.vol"
"$bin" dump -0 --image 'S2+S1' -f - "$work/a.vol" | "$bin" restore -r -f - --volume "$work/b.vol"
mkdir "$work/fromtar"
"$bin" volume export-tar "$work/b.vol" | tar --sparse -xf - -C "$work/fromtar"
diff -r --no-dereference --exclude=fifo "$src" "$work/fromtar"
echo "stream: $(stat -c %s "$work/level0.sdump") bytes for $(du -sb --apparent-size "$src" | cut -f1) bytes of source"
echo "demo ok: restored tree is identical"

# Shared setup of the benchmark scripts (sourced, not run): builds the
# binaries, generates the tree once under WORKDIR, makes a tmpfs work area,
# and defines timeit (wall seconds and peak RSS into $secs and $kib) and
# fresh_fs (a freshly made ext4, or $fs_type, loop-mounted at $mnt,
# ${fs_size:-12G} large).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/var/tmp/snapdump-bench}
src=$work/src
cargo build --release --quiet --bin snapdump --example gentree
bin=$PWD/target/release/snapdump
gen=$PWD/target/release/examples/gentree
[ -d "$src/big" ] || { echo "generating $src"; mkdir -p "$work"; "$gen" create "$src"; }
# Streams and ext4 images live on a tmpfs so that no tool is timed against
# the disk's flushing.
out=$(mktemp -d /dev/shm/snapdump-bench.XXXXXX)
mnt=$out/mnt
mkdir -p "$mnt"
cleanup() { umount "$mnt" 2>/dev/null || true; rm -rf "$out"; }
trap cleanup EXIT
timeit() { /usr/bin/time -f "%e %M" -o "$out/t" "$@" >/dev/null; read -r secs kib < "$out/t"; }
fresh_fs() {
  umount "$mnt" 2>/dev/null || true
  rm -f "$out/fs.img"
  truncate -s "${fs_size:-12G}" "$out/fs.img"
  case ${fs_type:-ext4} in
    ext4) mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$out/fs.img" ;;
    xfs) mkfs.xfs -q -f "$out/fs.img" ;; # reflink=1 is mkfs.xfs's default
    *) echo "fresh_fs: no such file system type: $fs_type" >&2; exit 1 ;;
  esac
  mount -o loop "$out/fs.img" "$mnt"
}
# Reads the whole tree once so both tools start from a warm page cache.
warm() { find "$src" -type f -print0 | xargs -0 cat > /dev/null; }

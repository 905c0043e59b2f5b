#!/usr/bin/env bash
# Replication benchmark: `snapdump replicate` into a volume, into a
# directory (atomic: the new tree built beside it and swapped in, changed
# files copied first on ext4) and into a directory with --inplace (changed
# blocks written into the files, as rsync --inplace does), next to
# `rsync -aHAXS --delete --inplace --no-whole-file`
# (--delete: without it rsync's copy keeps the deleted files and is no
# replica; the check at the end would fail), over ssh to
# 127.0.0.1 (an sshd of the script's own: temporary host and client keys,
# its own config, stopped by its pid at exit), on the tree of
# scripts/bench.sh after the mutation of scripts/bench-incremental.sh
# (`gentree mutate`: 1% of the 4 KiB blocks of each big file rewritten in
# place; about 1% of the small files rewritten, added and deleted).
# Destinations are on a fresh loop-mounted ext4 (bench-lib.sh's fresh_fs).
#
# Sequence: one mutation to settle the tree, then seed copies (full, before
# the measured change; reported, not compared); then two rounds of: mutate,
# the level-1 stream of that change, replicate (timed) and an up-to-date
# replicate (timed) per destination, rsync (timed, with `sync -f` of its
# destination: snapdump's serve fsyncs what it commits) and an up-to-date
# rsync. The replicas are checked against the source at the end.
#
# Bytes: "wire" is what crossed the ssh connection, both directions, as ssh
# itself counts it: the rsh shim runs ssh with LogLevel=VERBOSE and -E LOG,
# and ssh writes "Transferred: sent N, received M bytes" to LOG when it
# exits. This count is exact (ssh's own tally of the socket's bytes,
# encryption, key exchange and window adjustments included), cannot race with
# the reader (it is written before ssh exits, and the shim execs ssh), and
# adds no process to the timed data path. A `tee >(wc -c)` shim is not:
# bash does not wait for a process substitution, so the count may not be
# written yet when it is read. "payload" is what the tool wrote to and read
# from ssh, both directions, by its own count: replicate's --json
# wire_bytes_sent + wire_bytes_received, rsync --stats' total bytes sent +
# received (rsync leaves out its ~40-byte handshake).
#
# The level-1 stream of a round is `dump -1 --base M` of a copy of the
# replicate catalog (`cp -a`), taken after the mutation, just before the
# volume's replicate, where M is the volume's master (the snapshot the
# volume's previous replicate sent): the same tree, catalog and base as
# that replicate, so the same change. The directory's master has the same
# tree state, so its change is the same too.
#
# Needs root (loop mounts, sshd). Each run mutates the tree further.
#
#   scripts/bench-replicate.sh [WORKDIR]   (default /var/tmp/snapdump-bench)
# Four copies of the tree (a volume, two directories, rsync's) and the
# atomic apply's copies of the changed files fit in 20G.
fs_size=20G
. "$(dirname "$0")/bench-lib.sh"
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh > /dev/null || ! command -v rsync > /dev/null ||
  ! command -v jq > /dev/null; then
  apt-get update -qq && apt-get install -y -qq openssh-server openssh-client rsync jq
fi

# --- an sshd of our own on 127.0.0.1 ------------------------------------
k=$out/ssh
mkdir -p "$k" /run/sshd
ssh-keygen -q -t ed25519 -N '' -C snapdump-bench -f "$k/host_key"
ssh-keygen -q -t ed25519 -N '' -C snapdump-bench -f "$k/client_key"
cp "$k/client_key.pub" "$k/authorized_keys"
sshd_pid=
stop_sshd() {
  [ -n "$sshd_pid" ] || return 0
  kill "$sshd_pid" 2> /dev/null || true
  wait "$sshd_pid" 2> /dev/null || true
  sshd_pid=
}
# At exit: sshd stopped by its pid; the ext4 unmounted once the far side of
# a cut connection (a serve still finishing) lets go of it, and only then
# bench-lib's cleanup (which removes $out). A signal ends the script after
# the step in progress (bash runs the trap when that step returns;
# Ctrl-C, sent to the whole process group, also stops the step).
finish() {
  stop_sshd
  for _ in $(seq 100); do
    mountpoint -q "$mnt" || break
    umount "$mnt" 2> /dev/null && break
    sleep 0.1
  done
  if mountpoint -q "$mnt"; then
    echo "$mnt is still busy: left it and $out in place" >&2
    return
  fi
  cleanup
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2> /dev/null ||
    echo $((20000 + RANDOM % 40000))
}
start_sshd() {
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    cat > "$k/sshd_config" << CFG
ListenAddress 127.0.0.1
Port $port
HostKey $k/host_key
AuthorizedKeysFile $k/authorized_keys
PidFile $k/sshd.pid
PermitRootLogin yes
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AcceptEnv SNAPDUMP_*
PrintMotd no
MaxStartups 100
CFG
    # -D: in the foreground, so $! is sshd's pid; -e: its log to sshd.log.
    /usr/sbin/sshd -D -e -f "$k/sshd_config" 2> "$k/sshd.log" &
    sshd_pid=$!
    # Ready when it says it listens on the port and accepts (up to 10 s).
    for _ in $(seq 500); do
      kill -0 "$sshd_pid" 2> /dev/null || break
      if grep -q "Server listening on 127.0.0.1 port $port" "$k/sshd.log" &&
        (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then
        return 0
      fi
      sleep 0.02
    done
    stop_sshd
    # Only a port taken since free_port is worth another try.
    grep -qiE 'in use|bind' "$k/sshd.log" || break
  done
  echo "sshd did not start:" >&2
  tail "$k/sshd.log" >&2
  exit 1
}
start_sshd
# The rsh of both tools: ssh to our sshd, counting (see the top).
cat > "$k/rsh" << SH
#!/bin/sh
exec ssh -p $port -i $k/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=VERBOSE -E $k/ssh.log "\$@"
SH
chmod +x "$k/rsh"
rsh=$k/rsh
"$rsh" 127.0.0.1 true || { echo "ssh to 127.0.0.1:$port failed:" >&2; tail "$k/ssh.log" "$k/sshd.log" >&2; exit 1; }

# --- measuring ----------------------------------------------------------
# timeit, keeping the program's standard output in $out/stdout.
timeit_out() { /usr/bin/time -f "%e %M" -o "$out/t" "$@" > "$out/stdout"; read -r secs _ < "$out/t"; }
# Sum of ssh's "Transferred:" lines since the last reset_wire (every ssh
# the step ran); fails if there are none (an ssh that did not exit cleanly).
reset_wire() { : > "$k/ssh.log"; }
wire_bytes() {
  awk '/Transferred: sent/ { gsub(",", ""); s += $3; r += $5; n++ }
       END { if (!n) exit 1; printf "%.0f\n", s + r }' "$k/ssh.log" ||
    { echo "no ssh byte count in $k/ssh.log" >&2; exit 1; }
}
j() { jq -r "$1" "$out/stdout"; }
dst=$mnt
cat_dir=$out/cat
# Runs one timed replicate to 127.0.0.1:$1; sets secs, wire, payload,
# decision, top (the snapshot now on the destination) and stream.
rep() {
  reset_wire
  timeit_out "$bin" replicate --catalog "$cat_dir" --rsh "$rsh" --remote-snapdump "$bin" --json "${@:2}" "$src" "127.0.0.1:$1"
  [ "$(j .status)" = ok ] || { echo "replicate to $1 failed:" >&2; cat "$out/stdout" >&2; exit 1; }
  wire=$(wire_bytes)
  payload=$(j '.wire_bytes_sent + .wire_bytes_received')
  decision=$(j .decision)
  top=$(j .top.id)
  stream=$(j .stream_bytes)
}
# Runs the timed rsync (and sync -f of its destination); sets secs, wire,
# payload.
rs() {
  reset_wire
  timeit_out bash -c "rsync -aHAXS --delete --inplace --no-whole-file --stats -e '$rsh' '$src/' '127.0.0.1:$dst/rsync/' && sync -f '$dst/rsync'"
  wire=$(wire_bytes)
  payload=$(tr -d , < "$out/stdout" | awk '/^Total bytes (sent|received):/ { s += $4 } END { printf "%.0f\n", s }')
}
row() { # name seconds payload wire [l1] [rsync-seconds] [decision]
  local ratio="" rel=""
  [ -n "${5:-}" ] && ratio=$(awk -v w="$4" -v l="$5" 'BEGIN { printf "%.3f", w / l }')
  [ -n "${6:-}" ] && rel=$(awk -v t="$2" -v r="$6" 'BEGIN { printf "%.2f", t / r }')
  printf '%-48s %8.2f %14d %14d %8s %10s  %s\n' "$1" "$2" "$3" "$4" "$ratio" "$rel" "${7:-}"
}
header() { printf '%-48s %8s %14s %14s %8s %10s  %s\n' "$1" seconds "payload bytes" "wire bytes" wire/l1 time/rsync decision; }
rsync_name="rsync -aHAXS --delete --inplace --no-whole-file"

# --- seed: full copies before the measured change ------------------------
fresh_fs
seed=$(date +%s)
# As bench-incremental.sh: one mutation, then let the tree settle (files
# changed less than a second before a dump are compared block by block at
# the next one).
"$gen" mutate "$src" "$seed" > /dev/null
sleep 1.2
warm
echo "ssh to 127.0.0.1:$port (own sshd, pid $sshd_pid); destinations on a fresh ext4 at $dst"
echo "wire bytes: ssh's own count of the connection, both directions; payload: the tool's own count"
echo "rsync's times include sync -f of its destination (snapdump's serve fsyncs what it commits)"
echo
header "seed (full copies, before the change)"
rep "$dst/replica.vol"
vol_master=$top
row "snapdump replicate -> volume" "$secs" "$payload" "$wire" "" "" "$decision"
rep "$dst/dir"
row "snapdump replicate -> directory" "$secs" "$payload" "$wire" "" "" "$decision"
rep "$dst/dir-inplace" --inplace
row "snapdump replicate --inplace -> directory" "$secs" "$payload" "$wire" "" "" "$decision"
rs
row "$rsync_name" "$secs" "$payload" "$wire"

# --- two rounds -----------------------------------------------------------
for round in 1 2; do
  changed=$("$gen" mutate "$src" "$((seed + round))")
  sleep 1.2
  warm
  # The level-1 stream of the same change (see the top).
  rm -rf "$out/cat-l1"
  cp -a "$cat_dir" "$out/cat-l1"
  "$bin" dump -1 --base "$vol_master" -f "$out/l1.sdump" --catalog "$out/cat-l1" "$src" > /dev/null
  l1=$(stat -c %s "$out/l1.sdump")
  rm -rf "$out/cat-l1" "$out/l1.sdump"
  printf '\nround %d: changed data %d bytes; level-1 stream %d bytes (dump -1 --base %d of a copy of the catalog)\n' \
    "$round" "$changed" "$l1" "$vol_master"
  header "round $round"
  # Each destination's up-to-date run straight after its own replicate:
  # only a destination whose master is the catalog's newest snapshot is
  # "current" (otherwise it gets an increment of the metadata).
  rep "$dst/replica.vol"
  tv=$secs pv=$payload wv=$wire dv=$decision sv=$stream
  vol_master=$top
  rep "$dst/replica.vol"
  tvu=$secs pvu=$payload wvu=$wire dvu=$decision
  rep "$dst/dir"
  td=$secs pd=$payload wd=$wire ddir=$decision sd=$stream
  rep "$dst/dir"
  tdu=$secs pdu=$payload wdu=$wire ddu=$decision
  rep "$dst/dir-inplace" --inplace
  ti=$secs pi=$payload wi=$wire di=$decision
  rs
  trs=$secs pr=$payload wr=$wire
  rs
  tru=$secs pru=$payload wru=$wire
  row "snapdump replicate -> volume" "$tv" "$pv" "$wv" "$l1" "$trs" "$dv"
  row "snapdump replicate -> directory (atomic)" "$td" "$pd" "$wd" "$l1" "$trs" "$ddir"
  row "snapdump replicate --inplace -> directory" "$ti" "$pi" "$wi" "$l1" "$trs" "$di"
  row "$rsync_name" "$trs" "$pr" "$wr" "$l1" "$trs"
  row "up to date: replicate -> volume" "$tvu" "$pvu" "$wvu" "" "$tru" "$dvu"
  row "up to date: replicate -> directory" "$tdu" "$pdu" "$wdu" "" "$tru" "$ddu"
  row "up to date: rsync" "$tru" "$pru" "$wru" "" "$tru"
  [ "$sv" = "$l1" ] && [ "$sd" = "$l1" ] || echo "  note: replicate streams $sv (volume), $sd (directory) bytes, level-1 stream $l1"
  awk -v t="$tv" -v d="$ti" -v r="$trs" -v a="$tvu" -v b="$tdu" -v w="$wv" -v x="$wd" -v l="$l1" \
    -v p="$pv" -v q="$pd" 'BEGIN {
    printf "  payload / level-1 stream = %.3f, %.3f (target <= 1.05); wire / level-1 = %.3f, %.3f\n", p / l, q / l, w / l, x / l;
    printf "  time / rsync --inplace time = %.2f (volume), %.2f (directory --inplace) (target <= 0.2)\n", t / r, d / r;
    printf "  up to date = %.2f s, %.2f s (target < 1 s)\n", a, b }'
done

# --- the replicas are the source ---------------------------------------------
echo
"$bin" volume check "$dst/replica.vol" > /dev/null || { echo "volume check failed" >&2; exit 1; }
"$bin" dump -0 -f - "$dst/replica.vol" | "$bin" restore -C -f - --target "$src" ||
  { echo "the volume's newest snapshot differs from the source" >&2; exit 1; }
for d in dir dir-inplace; do
  diff -rq --no-dereference --exclude=.snapdump-restore "$src" "$dst/$d" ||
    { echo "the directory replica $d differs from the source" >&2; exit 1; }
done
diff -rq --no-dereference "$src" "$dst/rsync" || { echo "rsync's copy differs from the source" >&2; exit 1; }
echo "checked: the volume's newest snapshot, the directory replica and rsync's copy are the source"

#!/usr/bin/env bash
# Replication benchmark: `snapdump replicate` next to
# `rsync -aHAXS --inplace --no-whole-file` over ssh to 127.0.0.1, on the
# tree of scripts/bench.sh after the 1% mutation of `gentree mutate`.
# Wire bytes are counted by a shim around ssh that tees both directions
# through `wc -c`; snapdump's serve fsyncs what it commits, so rsync's
# time includes a `sync -f` of its destination. Two rounds, one run.
#
#   scripts/bench-replicate.sh [WORKDIR]   (default /var/tmp/snapdump-bench)
. "$(dirname "$0")/bench-lib.sh"
command -v rsync >/dev/null || apt-get install -y -qq rsync openssh-server openssh-client
mkdir -p /run/sshd
k=$out/ssh; mkdir -p "$k"
ssh-keygen -q -t ed25519 -N '' -f "$k/host"; ssh-keygen -q -t ed25519 -N '' -f "$k/client"
cp "$k/client.pub" "$k/auth"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$k/cfg" <<CFG
ListenAddress 127.0.0.1
Port $port
HostKey $k/host
AuthorizedKeysFile $k/auth
PermitRootLogin yes
StrictModes no
PasswordAuthentication no
UsePAM no
PidFile $k/pid
CFG
/usr/sbin/sshd -f "$k/cfg"
sleep 0.5
trap 'kill $(cat "$k/pid") 2>/dev/null; cleanup' EXIT
# The counting shim: bytes the client writes to ssh and reads from it.
cat > "$k/rsh" <<SH
#!/usr/bin/env bash
ssh -p $port -i $k/client -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR "\$@" \
  < <(tee >(wc -c >> $k/sent)) > >(tee >(wc -c >> $k/recv))
SH
chmod +x "$k/rsh"
wire() { awk '{s+=$1} END {print s+0}' "$k/sent" 2>/dev/null; }
reset_wire() { : > "$k/sent"; : > "$k/recv"; }

fresh_fs
dst=$mnt
cat_dir=$out/cat
seed=$(date +%s)
"$gen" mutate "$src" "$seed" > /dev/null
sleep 1.2
warm
rep() { "$bin" replicate --catalog "$cat_dir" --rsh "$k/rsh" --remote-snapdump "$bin" --json "$src" "127.0.0.1:$1"; }
# timeit runs a program, not a shell function.
trep() { timeit "$bin" replicate --catalog "$cat_dir" --rsh "$k/rsh" --remote-snapdump "$bin" "$src" "127.0.0.1:$1"; }
echo "seeding: snapdump full copies and rsync's first copy"
rep "$dst/replica.vol" > /dev/null
rep "$dst/dir" > /dev/null
rsync -aHAXS --inplace --no-whole-file -e "$k/rsh" "$src/" "127.0.0.1:$dst/rsync/"
# The level-1 stream of the same change, from a copy of the catalog.
for round in 1 2; do
  changed=$("$gen" mutate "$src" "$((seed + round))")
  sleep 1.2
  warm
  cp -a "$cat_dir" "$out/cat-l1"
  "$bin" dump -1 -f "$out/l1.sdump" --catalog "$out/cat-l1" "$src" > /dev/null
  l1=$(stat -c %s "$out/l1.sdump"); rm -rf "$out/cat-l1" "$out/l1.sdump"
  printf '\nround %d: changed data %d bytes, level-1 stream %d bytes\n' "$round" "$changed" "$l1"
  printf '%-46s %9s %14s %10s %10s\n' "tool" "seconds" "wire bytes" "wire/l1" "time/rsync"
  reset_wire; trep "$dst/replica.vol"; tv=$secs; wv=$(wire)
  reset_wire; trep "$dst/dir"; td=$secs; wd=$(wire)
  reset_wire; timeit bash -c "rsync -aHAXS --inplace --no-whole-file -e '$k/rsh' '$src/' '127.0.0.1:$dst/rsync/' && sync -f '$dst/rsync'"; tr=$secs; wr=$(wire)
  for row in "snapdump replicate (volume)|$tv|$wv" "snapdump replicate (directory)|$td|$wd" "rsync -aHAXS --inplace --no-whole-file|$tr|$wr"; do
    IFS='|' read -r name t w <<< "$row"
    printf '%-46s %9.2f %14d %10.3f %10.2f\n' "$name" "$t" "$w" "$(echo "$w / $l1" | bc -l)" "$(echo "$t / $tr" | bc -l)"
  done
  # Up to date: the destination whose master is the newest snapshot.
  reset_wire; trep "$dst/dir"; printf "%-46s %9.2f %14d\n" "up-to-date replicate (directory)" "$secs" "$(wire)"
done

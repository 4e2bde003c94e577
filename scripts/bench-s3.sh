#!/usr/bin/env bash
# S3 against filesystem, in the same run (docs/BENCHMARKS.md, "S3 storage"): a 1 GiB
# upload and download over FTP (curl) to a release logarchive-server with [storage]
# kind = "fs" and one with kind = "s3" on a local 3-node Garage cluster (replication
# factor 3, scripts/garage.sh), then bench-agent's backlog benchmark on each.
# Usage: cargo build --release --workspace && bash scripts/bench-s3.sh [SIZE_MIB] [AGENT_ARGS...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
size_mib=${1:-1024}
shift || true
agent_args=("$@")
[ ${#agent_args[@]} -gt 0 ] || agent_args=(--small 2000 --big 5 --parallel 4)
bin="$root/target/release"
work=$(mktemp -d /tmp/bench-s3.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  bash "$root/scripts/garage.sh" stop "$work/garage" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ports=()
for _ in $(seq 9); do ports+=("$(port)"); done
bash "$root/scripts/garage.sh" start "$work/garage" "${ports[@]}"
endpoint=$(cat "$work/garage/endpoint")
cat >"$work/storage.toml" <<EOF
[storage]
kind = "s3"
endpoint = "$endpoint"
bucket = "archive"
region = "garage"
credentials_file = "$work/garage/s3.credentials"
EOF

head -c $((size_mib << 20)) /dev/urandom >"$work/payload.bin"
echo "# bench-s3, $(date -u '+%Y-%m-%d %H:%M UTC'), ${size_mib} MiB, Garage 3 nodes on loopback, same disk"

for kind in fs s3; do
  dir="$work/$kind"
  mkdir -p "$dir"
  ftp=$(port) web=$(port) low=$(port)
  {
    echo "data_dir = \"data\""
    echo "[web]"
    echo "listen = \"127.0.0.1:$web\""
    echo "[ftp]"
    echo "listen = \"127.0.0.1:$ftp\""
    echo "passive_ports = \"$low-$((low + 5))\""
    if [ "$kind" = s3 ]; then cat "$work/storage.toml"; fi
  } >"$dir/server.toml"
  echo "bench-password" | "$bin/logarchive-server" user add bench --perm elradfmw \
    --password-stdin --config "$dir/server.toml" >/dev/null
  "$bin/logarchive-server" run --config "$dir/server.toml" >"$dir/server.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -s "ftp://127.0.0.1:$ftp/" -u bench:bench-password >/dev/null 2>&1 && break; sleep 0.1; done
  for run in 1 2; do
    up=$( { /usr/bin/time -f %e curl -sS -u bench:bench-password -T "$work/payload.bin" \
      "ftp://127.0.0.1:$ftp/payload-$run.bin" >/dev/null; } 2>&1 )
    down=$( { /usr/bin/time -f %e curl -sS -u bench:bench-password -o "$work/back.bin" \
      "ftp://127.0.0.1:$ftp/payload-$run.bin"; } 2>&1 )
    cmp -s "$work/payload.bin" "$work/back.bin" || { echo "$kind: download differs"; exit 1; }
    rm -f "$work/back.bin"
    echo "$kind run $run: upload ${up} s ($(python3 -c "print(round($size_mib/$up))") MiB/s), download ${down} s ($(python3 -c "print(round($size_mib/$down))") MiB/s)"
  done
  # The stored bytes: on S3, Garage keeps 3 copies.
  [ "$kind" = s3 ] && echo "garage data on disk: $(du -sh "$work/garage" | cut -f1) for $((2 * size_mib)) MiB stored"
done
rm -f "$work/payload.bin"

echo
echo "## bench-agent backlog, kind = fs"
"$bin/bench-agent" --only backlog --dir "$work" "${agent_args[@]}"
echo "## bench-agent backlog, kind = s3"
# A prefix of its own: a server takes the users.toml already shared under a prefix.
sed 's/^bucket = .*/&\nprefix = "agent-bench"/' "$work/storage.toml" >"$work/storage-agent.toml"
"$bin/bench-agent" --only backlog --dir "$work" --storage "$work/storage-agent.toml" "${agent_args[@]}"

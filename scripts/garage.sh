#!/usr/bin/env bash
# A local 3-node Garage cluster (replication factor 3) for logarchive's S3 tests and
# benchmarks. Garage runs as separate processes, never linked into logarchive.
#
#   scripts/garage.sh build
#       puts Garage in target/garage/bin/garage unless it is already there: copied from the
#       machine's cache ($GARAGE_CACHE, default ~/.cache/logarchive/garage-VERSION), else
#       built there first (crates.io package `garage`, LMDB metadata, bundled libraries:
#       about 17 CPU-minutes, 10-40 min on 2 cores depending on what else runs), so a fresh
#       clone on the same machine (CI) does not build it again.
#   scripts/garage.sh start DIR RPC0 S3_0 ADMIN0 RPC1 S3_1 ADMIN1 RPC2 S3_2 ADMIN2
#       starts three nodes on those loopback ports with their files under DIR, connects
#       them, applies a layout, creates the key and the bucket `archive`, and writes
#       DIR/s3.credentials (access key id, secret key: two lines) and DIR/endpoint (the
#       S3 URL of node 0). Node i's process id is in DIR/node-i.pid, its log in
#       DIR/node-i.log. With GARAGE_WATCH_PID set, a watcher stops the cluster within a
#       second of that process's end (a test process killed before it could stop it).
#   scripts/garage.sh bucket DIR NAME
#       creates another bucket, readable and writable with the same key.
#   scripts/garage.sh stop DIR
#       stops every node of the cluster in DIR and waits for them to exit (SIGKILL after
#       10 s).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
GARAGE_VERSION=2.5.0
garage="$root/target/garage/bin/garage"

build() {
  if [ -x "$garage" ]; then
    return
  fi
  local cache=${GARAGE_CACHE:-$HOME/.cache/logarchive/garage-$GARAGE_VERSION}
  if [ ! -x "$cache/bin/garage" ]; then
    echo "building Garage $GARAGE_VERSION into $cache (once per machine)" >&2
    local start=$SECONDS
    mkdir -p "$cache"
    cargo install garage --version "$GARAGE_VERSION" --locked \
      --no-default-features --features bundled-libs,lmdb \
      --root "$cache" --target-dir "$root/target/garage/build" >&2
    # The build tree is large and not needed once the binary is installed.
    rm -rf "$root/target/garage/build"
    echo "Garage built in $((SECONDS - start)) s" >&2
  fi
  mkdir -p "$(dirname "$garage")"
  cp "$cache/bin/garage" "$garage"
}

# garage CLI against node $1 of the cluster in $dir.
cli() {
  local node=$1
  shift
  "$garage" -c "$dir/node-$node/garage.toml" "$@"
}

start() {
  dir=$1
  shift
  if [ $# -ne 9 ]; then
    echo "usage: garage.sh start DIR RPC0 S3_0 ADMIN0 RPC1 S3_1 ADMIN1 RPC2 S3_2 ADMIN2" >&2
    exit 2
  fi
  build
  local ports=("$@")
  local secret
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  mkdir -p "$dir"
  for i in 0 1 2; do
    local rpc=${ports[$((i * 3))]} s3=${ports[$((i * 3 + 1))]} admin=${ports[$((i * 3 + 2))]}
    mkdir -p "$dir/node-$i/meta" "$dir/node-$i/data"
    cat >"$dir/node-$i/garage.toml" <<EOF
metadata_dir = "$dir/node-$i/meta"
data_dir = "$dir/node-$i/data"
db_engine = "lmdb"
# The tests make many small databases: keep LMDB's map (virtual memory) small.
lmdb_map_size = "1GiB"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"

[admin]
api_bind_addr = "127.0.0.1:$admin"
EOF
    chmod 600 "$dir/node-$i/garage.toml"
    RUST_LOG=${GARAGE_LOG:-warn} nohup "$garage" -c "$dir/node-$i/garage.toml" server \
      >"$dir/node-$i.log" 2>&1 </dev/null &
    echo $! >"$dir/node-$i.pid"
  done
  # Each node writes its key when it starts.
  local ids=()
  for i in 0 1 2; do
    local id=""
    for _ in $(seq 100); do
      id=$(cli "$i" node id -q 2>/dev/null) && break
      sleep 0.1
    done
    [ -n "$id" ] || { echo "node $i did not start: $(tail -5 "$dir/node-$i.log")" >&2; exit 1; }
    ids+=("$id")
  done
  for i in 1 2; do
    for _ in $(seq 50); do
      cli 0 node connect "${ids[$i]}" >/dev/null 2>&1 && break
      sleep 0.2
    done
  done
  for i in 0 1 2; do
    cli 0 layout assign -z dc1 -c 1G "${ids[$i]%@*}" >/dev/null
  done
  cli 0 layout apply --version 1 >/dev/null
  # The layout reaches every node, then the cluster answers S3 requests.
  for _ in $(seq 100); do
    if cli 0 status 2>/dev/null | grep -q "HEALTHY NODES"; then
      cli 0 key create logarchive-test >"$dir/key.txt" 2>/dev/null && break
    fi
    sleep 0.2
  done
  local key_id secret_key
  key_id=$(awk '$1 == "Key" && $2 == "ID:" {print $3}' "$dir/key.txt")
  secret_key=$(awk '$1 == "Secret" && $2 == "key:" {print $3}' "$dir/key.txt")
  [ -n "$key_id" ] && [ -n "$secret_key" ] || { echo "no key: $(cat "$dir/key.txt")" >&2; exit 1; }
  printf '%s\n%s\n' "$key_id" "$secret_key" >"$dir/s3.credentials"
  chmod 600 "$dir/s3.credentials" "$dir/key.txt"
  echo "http://127.0.0.1:${ports[1]}" >"$dir/endpoint"
  bucket "$dir" archive
  if [ -n "${GARAGE_WATCH_PID:-}" ]; then
    nohup bash -c 'while kill -0 "$1" 2>/dev/null && [ -d "$2" ]; do sleep 1; done; bash "$3" stop "$2"' \
      watch "$GARAGE_WATCH_PID" "$dir" "$root/scripts/garage.sh" >/dev/null 2>&1 </dev/null &
  fi
}

bucket() {
  dir=$1
  local name=$2 key_id
  key_id=$(head -1 "$dir/s3.credentials")
  cli 0 bucket create "$name" >/dev/null
  cli 0 bucket allow --read --write --owner "$name" --key "$key_id" >/dev/null
}

stop() {
  dir=$1
  local pids=()
  for i in 0 1 2; do
    if [ -f "$dir/node-$i.pid" ]; then
      pids+=("$(cat "$dir/node-$i.pid")")
    fi
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 100); do
    local alive=0
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ $alive -eq 1 ] || return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

case "${1:-}" in
  build) build ;;
  start) shift; start "$@" ;;
  bucket) shift; bucket "$@" ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: garage.sh build | start DIR PORTS... | bucket DIR NAME | stop DIR" >&2; exit 2 ;;
esac

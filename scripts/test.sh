#!/usr/bin/env bash
# Runs logarchive's whole test suite on a fresh Debian machine: installs the real clients
# the end-to-end tests drive when they are missing, checks formatting and lints, builds
# every binary, then runs all tests. Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use (command -> package).
declare -A needed=([curl]=curl [lftp]=lftp [vsftpd]=vsftpd [python3]=python3 [chromium]=chromium [chromedriver]=chromium-driver [logger]=bsdutils [rsyslogd]=rsyslog)
missing=()
for command in "${!needed[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$command" >/dev/null 2>&1 || missing+=("${needed[$command]}")
done
# rsyslog's TLS driver (the syslog TLS test forwards through it) has no command of its own.
compgen -G "/usr/lib/*/rsyslog/lmnsd_gtls.so" >/dev/null || missing+=(rsyslog-gnutls)
# Nor has its RELP output (the RELP tests send through omrelp).
compgen -G "/usr/lib/*/rsyslog/omrelp.so" >/dev/null || missing+=(rsyslog-relp)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

# A one-off build gains nothing from incremental state but its disk space.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The S3 tests run a Garage cluster (built once per machine, then copied from its cache:
# scripts/garage.sh). Built first, so its build folder is gone before ours grows.
bash scripts/garage.sh build
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests run the binaries built here.
cargo build --workspace --locked
cargo test --workspace --locked
# The end-to-end suites again with every server's archive in a bucket of a 3-node Garage
# cluster (one per test binary, stopped when it exits): same tests, other back-end.
LOGARCHIVE_TEST_STORAGE=s3 cargo test --locked -p logarchive-tests \
  --test ftp_behaviour --test ftp_permissions --test agent_mirror \
  --test web_http --test feeds_syslog --test feeds_http

#!/usr/bin/env bash
# usage: with-chain.sh START_SCRIPT COMMAND...
# Starts a dev subtensor node with START_SCRIPT (which prints its ws:// URL, e.g. the offline runtime's
# start.sh), runs COMMAND with ISN_LOCALNET_CHAIN_URL set to it, and stops the node whatever happens.
set -euo pipefail
start=$1; shift
stop="$(dirname "$start")/stop.sh"
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
url=$(bash "$start" "$port" | tail -n 1)
trap 'bash "$stop" "$port" >/dev/null 2>&1 || true' EXIT
echo "dev chain at $url"
ISN_LOCALNET_CHAIN_URL=$url "$@"

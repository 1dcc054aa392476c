#!/usr/bin/env bash
# The whole test suite: once against an embedded Valkey (no Redis needed), once more against the machine's
# Redis and PostgreSQL when they answer on their standard ports, and the Redis-backed validator, gateway
# and miner tests once more against a local 3-primary Redis Cluster. The later passes run only the tests that
# reach Redis or SQL through the fixtures (ISN_TEST_BACKEND_PASS=1, see tests/conftest.py): the others would
# run unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
export PATH="$PWD/$BIN:$PATH"

echo "== suite: embedded Valkey, SQLite"
started=$SECONDS
env -u REDIS_URL -u DATABASE_URL "$BIN/pytest" -q -p no:cacheprovider --durations=15 "$@"
echo "   first pass: $((SECONDS - started)) s"

if "$BIN/python" -c "import redis,sys; redis.Redis(host='127.0.0.1',port=6379,socket_connect_timeout=1).ping()" 2>/dev/null; then
  echo "== suite: external Redis at 127.0.0.1:6379 (Redis-backed tests)"
  pg=""
  if "$BIN/python" -c "import socket; socket.create_connection(('127.0.0.1',5432),1)" 2>/dev/null; then
    pg="postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    echo "   with PostgreSQL: $pg"
  fi
  if [ -n "$pg" ]; then export DATABASE_URL=$pg; fi
  # The examples' models, the subnet builder, and the files below keep no state in Redis or SQL that
  # another backend could change (CLI, wallets, logs, deployment files, docs, the import layout, the
  # simulator's figures): once is enough.
  ONCE=(test_wallet_encrypted.py test_deploy.py test_writing_a_subnet.py test_task_check.py test_layout.py
        test_observability_files.py test_gateway_docs.py test_cli_operators.py test_log_streams.py
        test_miner_handler.py test_behaviours.py test_hostile_signals.py test_hostile_cli.py
        test_miner_logs.py test_simulate.py)
  REDIS_URL=redis://127.0.0.1:6379/0 ISN_TEST_BACKEND_PASS=1 "$BIN/pytest" -q -p no:cacheprovider -m "not chain" \
    --ignore-glob='tests/test_example_*.py' --ignore-glob='tests/test_builder_*.py' \
    "${ONCE[@]/#/--ignore=tests/}" "$@"
else
  echo "== no Redis at 127.0.0.1:6379: the embedded-Valkey run above is the Redis run"
fi

# The files whose tests use the `redis` / `redis_url` fixtures for validator, gateway and miner state.
# (tests/test_scale_out.py is not here: it runs its cluster case in every pass already.)
CLUSTER_FILES=(
  tests/test_redis_cluster.py
  tests/test_quotas_redis.py tests/test_scores_redis.py tests/test_scoring_stream.py tests/test_orchestrator.py
  tests/test_weights_service.py tests/test_validator_faults.py tests/test_client.py
  tests/test_service_sidecar.py tests/test_service_shell.py tests/test_service_synthesizing.py
  tests/test_service_runner.py tests/test_service_cli.py
  tests/test_gateway_units.py tests/test_gateway_e2e.py tests/test_gateway_openai.py
  tests/test_gateway_schemathesis.py tests/test_dashboard.py
  tests/test_miner_app.py tests/test_miner_quota.py tests/test_miner_batching.py tests/test_btauth.py
)
echo "== suite: local 3-primary Redis Cluster (Redis-backed validator, gateway and miner tests)"
cluster_log=$(mktemp)
"$BIN/python" -m inference_subnet.store.cluster --primaries 3 >"$cluster_log" 2>&1 &
cluster_pid=$!
trap 'kill "$cluster_pid" 2>/dev/null || true; wait "$cluster_pid" 2>/dev/null || true; rm -f "$cluster_log"' EXIT
cluster_url=""
for _ in $(seq 1 600); do  # up to 60 s for the nodes to agree on the slot map
  cluster_url=$(head -n 1 "$cluster_log")
  if [[ $cluster_url == redis+cluster://* ]]; then break; fi
  if ! kill -0 "$cluster_pid" 2>/dev/null; then cat "$cluster_log"; exit 1; fi
  sleep 0.1
done
if [[ $cluster_url != redis+cluster://* ]]; then echo "the local cluster did not start"; cat "$cluster_log"; exit 1; fi
echo "   $cluster_url"
started=$SECONDS
env -u DATABASE_URL REDIS_URL="$cluster_url" ISN_TEST_BACKEND_PASS=1 "$BIN/pytest" -q -p no:cacheprovider -m "not chain" \
  "${CLUSTER_FILES[@]}" "$@"
echo "   cluster pass: $((SECONDS - started)) s"

#!/usr/bin/env bash
# The main job on a fresh machine: a real Locust run with swarmtel telemetry.
#  1. builds swarmtel and the example plugins from source;
#  2. sets up Locust and the bridge in target/py-venv (scripts/python-env.sh);
#  3. starts the bundled HTTP target (examples/target.py) on a free loopback port;
#  4. runs examples/locustfile.py headless for RUN_TIME (default 15s): a master and two workers
#     (MODE=distributed, the default) or one process (MODE=standalone). The bridge starts
#     `swarmtel serve --config examples/swarmtel.toml` itself.
# Telemetry is printed as JSON lines on stdout, with Locust's summary; logs go to stderr
# (the workers' to target/run-example/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
RUN_TIME="${RUN_TIME:-15s}"
MODE="${MODE:-distributed}"
USERS="${USERS:-10}"

scripts/build-guests.sh >/dev/null
cargo build --quiet -p swarmtel
venv="$(scripts/python-env.sh)"
logs="$root/target/run-example"
mkdir -p "$logs"
socket_dir="$(mktemp -d /tmp/swarmtel-example.XXXXXX)"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$socket_dir"
}
trap cleanup EXIT

"$venv/bin/python" -u examples/target.py 0 >"$logs/target.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do
    grep -q "^listening on" "$logs/target.log" 2>/dev/null && break
    sleep 0.1
done
host="http://$(sed -n 's/^listening on //p' "$logs/target.log")"
echo "swarmtel example: target at $host, $MODE run for $RUN_TIME" >&2

locust=("$venv/bin/locust" -f examples/locustfile.py)
bridge=(--swarmtel-endpoint "unix:$socket_dir/serve.sock")
common=(--headless -u "$USERS" -r "$USERS" -t "$RUN_TIME" --host "$host" --only-summary
    --swarmtel-config examples/swarmtel.toml --swarmtel-bin "$root/target/debug/swarmtel"
    --swarmtel-testplan swarmtel-example "${bridge[@]}")
status=0
if [[ "$MODE" == standalone ]]; then
    "${locust[@]}" "${common[@]}" || status=$?
else
    port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "${locust[@]}" --master --master-bind-host 127.0.0.1 --master-bind-port "$port" \
        --expect-workers 2 "${common[@]}" &
    master=$!
    pids+=("$master")
    for index in 1 2; do
        "${locust[@]}" --worker --master-host 127.0.0.1 --master-port "$port" "${bridge[@]}" \
            >"$logs/worker-$index.log" 2>&1 &
        pids+=("$!")
    done
    wait "$master" || status=$?
fi
# Locust exits 1 when requests failed; the target's /flaky endpoint fails on purpose.
if [[ $status -gt 1 ]]; then
    echo "swarmtel example: locust failed with exit code $status" >&2
    exit "$status"
fi

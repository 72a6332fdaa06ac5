#!/usr/bin/env bash
# Regenerate examples/locust-run.ndjson from a real distributed Locust run
# (1 master + 2 workers) against the local stdlib target in ../target.py.
# All traffic stays on 127.0.0.1.
#
# Env overrides: LOCUST_VENV (default /tmp/locust-venv), TARGET_PORT (8089),
# MASTER_PORT (5557), USERS (12), SPAWN_RATE (10), RUN_TIME (12s),
# SWARMTEL_WAIT (per-user wait seconds, 0.02), OUT (merged output file).
set -euo pipefail

LOCUST_VERSION="2.47.0"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${LOCUST_VENV:-/tmp/locust-venv}"
TARGET_PORT="${TARGET_PORT:-8089}"
MASTER_PORT="${MASTER_PORT:-5557}"
USERS="${USERS:-12}"
SPAWN_RATE="${SPAWN_RATE:-10}"
RUN_TIME="${RUN_TIME:-12s}"
OUT="${OUT:-$HERE/../locust-run.ndjson}"
export SWARMTEL_WAIT="${SWARMTEL_WAIT:-0.02}"

if [[ "$VENV" == /work/main* ]]; then
    echo "refusing to put a virtualenv inside the repo: $VENV" >&2
    exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q "locust==$LOCUST_VERSION"
LOCUST="$VENV/bin/locust"
echo "locust: $("$LOCUST" --version 2>&1 | head -1)"

CAPTURE_DIR="$(mktemp -d /tmp/swarmtel-capture.XXXXXX)"
LOG_DIR="$CAPTURE_DIR/logs"
mkdir -p "$LOG_DIR"
export SWARMTEL_CAPTURE_DIR="$CAPTURE_DIR"
echo "capture dir: $CAPTURE_DIR"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

# 1. target
python3 "$HERE/../target.py" "$TARGET_PORT" >"$LOG_DIR/target.log" 2>&1 &
TARGET_PID=$!
PIDS+=("$TARGET_PID")
python3 - "$TARGET_PORT" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/"
for _ in range(100):
    try:
        urllib.request.urlopen(url, timeout=1).read()
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("target did not come up")
PY

cd "$HERE"

# 2. master (waits for 2 workers), then the workers
"$LOCUST" -f locustfile.py --headless --master \
    --master-bind-host 127.0.0.1 --master-bind-port "$MASTER_PORT" \
    --expect-workers 2 -u "$USERS" -r "$SPAWN_RATE" -t "$RUN_TIME" \
    --host "http://127.0.0.1:$TARGET_PORT" --only-summary \
    >"$LOG_DIR/master.log" 2>&1 &
MASTER_PID=$!
PIDS+=("$MASTER_PID")

WORKER_PIDS=()
for i in 1 2; do
    "$LOCUST" -f locustfile.py --worker \
        --master-host 127.0.0.1 --master-port "$MASTER_PORT" \
        >"$LOG_DIR/worker$i.log" 2>&1 &
    WORKER_PIDS+=("$!")
    PIDS+=("$!")
done

# 3. wait (locust exits non-zero when requests failed, which /flaky guarantees)
rc=0
wait "$MASTER_PID" || rc=$?
echo "master exit code: $rc"
for pid in "${WORKER_PIDS[@]}"; do
    wrc=0
    wait "$pid" || wrc=$?
    echo "worker $pid exit code: $wrc"
done
kill "$TARGET_PID" 2>/dev/null || true
wait "$TARGET_PID" 2>/dev/null || true

# 4. merge per-node files, stable-sorted by time, and summarise
python3 - "$CAPTURE_DIR" "$OUT" <<'PY'
import collections, glob, json, os, sys
cap, out = sys.argv[1], sys.argv[2]
files = sorted(glob.glob(os.path.join(cap, "*.ndjson")))
if not files:
    sys.exit("no capture files produced")
recs = []
for f in files:
    with open(f, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"{f}:{n}: invalid JSON: {e}")
recs.sort(key=lambda r: r["time"])  # list.sort is stable
with open(out, "w", encoding="utf-8") as fh:
    for r in recs:
        fh.write(json.dumps(r, separators=(",", ":")) + "\n")
print(f"wrote {len(recs)} events ({os.path.getsize(out)} bytes) to {os.path.normpath(out)}")
by_event = collections.Counter(r["event"] for r in recs)
by_node = collections.Counter(r["node"] for r in recs)
by_both = collections.Counter((r["event"], r["node"]) for r in recs)
nodes = sorted(by_node)
print("\nper node:")
for n in nodes:
    print(f"  {n:10s} {by_node[n]}")
print("\nper event x node:")
print("  " + "event".ljust(20) + "".join(n.rjust(10) for n in nodes) + "total".rjust(8))
for ev in sorted(by_event):
    print("  " + ev.ljust(20) + "".join(str(by_both[(ev, n)]).rjust(10) for n in nodes) + str(by_event[ev]).rjust(8))
PY

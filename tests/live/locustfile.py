"""The live tests' locustfile: the users of examples/locustfile.py (which imports the bridge),
plus a way for a test to end a run the way `--run-time` does, once it has seen what it waits
for: when the file named by SWARMTEL_LIVE_STOP_FILE exists, the master (or standalone) calls
`runner.quit()`, exactly what Locust's run-time limit calls in a headless run.

(Not SIGTERM: Locust 2.47 runs its shutdown twice on SIGTERM, once in the signal handler and
once when the runner's greenlets end, so `quitting` fires twice.)

When SWARMTEL_LIVE_COUNT_DIR is set, each worker writes how many requests it made (Locust's
`request` events, what its own stats count) to `worker-<index>.requests` in that folder at
`quit`, so a test can compare each worker's telemetry with Locust's own count.
"""
import logging
import os
import runpy
from pathlib import Path

import gevent
from locust import events
from locust.runners import WorkerRunner

ShopUser = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "locustfile.py"))["ShopUser"]

STOP_FILE = os.environ.get("SWARMTEL_LIVE_STOP_FILE")
COUNT_DIR = os.environ.get("SWARMTEL_LIVE_COUNT_DIR")


@events.init.add_listener
def _quit_when_asked(environment, **kwargs):
    if not STOP_FILE or isinstance(environment.runner, WorkerRunner):
        return

    def watch():
        while not os.path.exists(STOP_FILE):
            gevent.sleep(0.1)
        logging.info("live test: %s exists, quitting", STOP_FILE)
        environment.runner.quit()

    gevent.spawn(watch)


if COUNT_DIR:
    _requests = {"count": 0, "runner": None}

    @events.init.add_listener
    def _note_runner(environment, **kwargs):
        _requests["runner"] = environment.runner

    @events.request.add_listener
    def _count_request(**kwargs):
        _requests["count"] += 1

    @events.quit.add_listener
    def _write_count(**kwargs):
        runner = _requests["runner"]
        if isinstance(runner, WorkerRunner):
            path = Path(COUNT_DIR) / f"worker-{runner.worker_index}.requests"
            path.write_text(str(_requests["count"]))

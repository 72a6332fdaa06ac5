"""One scenario, run once under locust-telemetry 2.1.2 and once under swarmtel's
locust-telemetry plugin (LT_MODE picks which), so their records can be compared.

Every user makes exactly REQUESTS_PER_USER requests, every fifth to a path the target answers
404, then stops: the totals are the same in both runs whatever the timing.
"""
import os

from locust import HttpUser, constant, task
from locust.exception import StopUser

if os.environ.get("LT_MODE") == "locust-telemetry":
    from locust_telemetry import entrypoint

    entrypoint.setup_telemetry()
else:
    import swarmtel_locust  # noqa: F401  (the one line a team changes)

REQUESTS_PER_USER = 25


class CompareUser(HttpUser):
    wait_time = constant(0.05)

    def on_start(self):
        self.made = 0

    @task
    def step(self):
        if self.made >= REQUESTS_PER_USER:
            raise StopUser()
        self.made += 1
        self.client.get("/missing" if self.made % 5 == 0 else "/items")

"""A small shop scenario against examples/target.py, with the swarmtel bridge enabled.

    locust -f examples/locustfile.py --headless -u 10 -r 10 -t 15s \
        --host http://127.0.0.1:8089 --swarmtel-config examples/swarmtel.toml

The one line that matters is the import: it adds the `--swarmtel-*` options and streams every
Locust event of this process to `swarmtel serve`.
"""
import os
import random

import swarmtel_locust  # noqa: F401  (enables the bridge)
from locust import HttpUser, constant, task


class ShopUser(HttpUser):
    wait_time = constant(float(os.environ.get("SWARMTEL_WAIT", "0.02")))

    @task(4)
    def index(self):
        self.client.get("/")

    @task(6)
    def list_items(self):
        self.client.get("/items")

    @task(5)
    def get_item(self):
        self.client.get(f"/items/{random.randint(1, 500)}", name="/items/[id]")

    @task(2)
    def create_order(self):
        self.client.post("/orders", json={"item_id": random.randint(1, 500), "qty": random.randint(1, 3)})

    @task(2)
    def flaky(self):
        self.client.get("/flaky")

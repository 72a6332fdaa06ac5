"""swarmtel-locust: stream every Locust event of this process to ``swarmtel serve``.

``import swarmtel_locust`` in a locustfile is all it takes: the import registers the
bridge's command-line options and event listeners on ``locust.events``.
"""
__version__ = "0.1.0"

# Locust monkey-patches the standard library for gevent when imported. It must come before
# the bridge's modules, which bind time.sleep as a default: imported first (a script that
# imports the bridge before Locust), the flusher would block the whole process in a real
# sleep every flush interval.
import locust  # noqa: E402,F401

from .plugin import BRIDGE, MSG_RUN, MSG_RUN_REQUEST, register  # noqa: E402

register()

__all__ = ["BRIDGE", "MSG_RUN", "MSG_RUN_REQUEST", "register", "__version__"]

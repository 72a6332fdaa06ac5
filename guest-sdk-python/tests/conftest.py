"""Shared fixtures: the repository's paths and a helper that writes a plugin module."""

import sys
import textwrap
from pathlib import Path

import pytest

#: The repository root (guest-sdk-python/tests/ → ../..).
REPO = Path(__file__).resolve().parents[2]
#: The sample capture of a distributed Locust run.
SAMPLE = REPO / "examples" / "locust-run.ndjson"
#: The seed's example, ported.
SEED_ENTRY = REPO / "example-plugins" / "custom-telemetry-py" / "my_project" / "entry.py"
#: The Python request-stats.
REQUEST_STATS = REPO / "example-plugins" / "request-stats-py" / "request_stats_py"


@pytest.fixture
def write_plugin(tmp_path):
    """Writes ``source`` (dedented) to ``tmp_path/name`` and returns its path."""

    def write(source: str, name: str = "my_plugin.py") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
        return path

    return write


@pytest.fixture(autouse=True)
def _keep_sys_path():
    before = list(sys.path)
    yield
    sys.path[:] = before

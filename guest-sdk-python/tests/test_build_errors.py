"""``swarmtel-recorder build`` stops an author's mistake before componentizing: exit 1, one
line naming the file and line, no traceback, no output file."""

import re
import subprocess
import sys

import pytest

GOOD_RECORDER = """
from swarmtel_recorder import BaseTelemetryPlugin, BaseTelemetryRecorder, TelemetryData, register_plugin

class StartRecorder(BaseTelemetryRecorder):
    name = "start"

    def __init__(self, env):
        super().__init__(env)
        env.events.test_start.add_listener(self.started)

    def started(self, **kwargs):
        self.log_telemetry(TelemetryData(type="event", name="STARTED"), "started")
"""

GOOD_PLUGIN = """
class StartPlugin(BaseTelemetryPlugin):
    def load_worker_telemetry_recorders(self, environment, **kwargs):
        StartRecorder(env=environment)
"""

CASES = {
    "syntax_error": (
        GOOD_RECORDER + "\ndef broken(:\n    pass\n",
        r"my_plugin\.py:13: syntax error",
    ),
    "unknown_event": (
        GOOD_RECORDER.replace("events.test_start", "events.test_strat") + GOOD_PLUGIN
        + "register_plugin(plugin=StartPlugin())\n",
        r"my_plugin\.py:8: env\.events\.test_strat: no such event; did you mean env\.events\.test_start\?",
    ),
    "unknown_hook_method": (
        GOOD_RECORDER + "\n    def on_test_stp(self):\n        pass\n" + GOOD_PLUGIN
        + "register_plugin(plugin=StartPlugin())\n",
        r"my_plugin\.py:13: recorder start: method on_test_stp is not a hook; did you mean on_test_stop\?",
    ),
    "option_without_type": (
        GOOD_RECORDER + GOOD_PLUGIN
        + "    def add_arguments(self, parser):\n"
        + "        group = parser.add_argument_group('telemetry.start', 'Options')\n"
        + "        group.add_argument('--threshold', default=3, help='no type')\n"
        + "register_plugin(plugin=StartPlugin())\n",
        r"my_plugin\.py:18: option --threshold has no type: add type=str, int, float or bool",
    ),
    "no_plugin_registered": (
        GOOD_RECORDER + GOOD_PLUGIN,
        r"my_plugin\.py: no plugin registered: call swarmtel_recorder\.register_plugin\(plugin=MyPlugin\(\)\)",
    ),
    "two_plugins_registered": (
        GOOD_RECORDER + GOOD_PLUGIN
        + "register_plugin(plugin=StartPlugin())\nregister_plugin(plugin=StartPlugin())\n",
        r"my_plugin\.py:17: 2 plugins registered \(StartPlugin at my_plugin\.py:16, StartPlugin at my_plugin\.py:17\)",
    ),
    "exception_at_import": (
        GOOD_RECORDER + GOOD_PLUGIN + "register_plugin(plugin=StartPlugn())\n",
        r"my_plugin\.py:16: NameError: name 'StartPlugn' is not defined",
    ),
    "listens_to_nothing": (
        GOOD_RECORDER.replace("env.events.test_start.add_listener(self.started)", "pass")
        + GOOD_PLUGIN + "register_plugin(plugin=StartPlugin())\n",
        r"my_plugin\.py:3: recorder start listens to no event",
    ),
    "listener_wants_an_unknown_argument": (
        GOOD_RECORDER.replace("def started(self, **kwargs)", "def started(self, user_count)")
        + GOOD_PLUGIN + "register_plugin(plugin=StartPlugin())\n",
        r"my_plugin\.py:10: listener StartRecorder\.started of test_start takes `user_count`",
    ),
    "package_not_bundled": (
        "import pytest\n" + GOOD_RECORDER + GOOD_PLUGIN + "register_plugin(plugin=StartPlugin())\n",
        r"my_plugin\.py:1: imports `pytest`, which will not be in the component",
    ),
}


def run_build(cwd, *arguments):
    return subprocess.run(
        [sys.executable, "-m", "swarmtel_recorder", "build", *arguments],
        cwd=str(cwd),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_author_mistake_fails_the_build_with_one_line(case, write_plugin, tmp_path):
    source, expected = CASES[case]
    write_plugin(source)
    result = run_build(tmp_path, "my_plugin.py", "-o", "out.wasm")
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("swarmtel-recorder: error: ")
    assert re.search(expected, lines[0]), lines[0]
    assert not (tmp_path / "out.wasm").exists()


def test_a_missing_target_is_named(tmp_path):
    result = run_build(tmp_path, "nowhere.py")
    assert result.returncode == 1
    assert "nowhere.py: no such .py file or package directory" in result.stderr


def test_check_describes_a_good_plugin_without_building(write_plugin, tmp_path):
    write_plugin(GOOD_RECORDER + GOOD_PLUGIN + "register_plugin(plugin=StartPlugin())\n")
    result = subprocess.run(
        [sys.executable, "-m", "swarmtel_recorder", "check", "my_plugin.py"],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "start 0.1.0: (no description); recorders start [worker/standalone] on test_start"

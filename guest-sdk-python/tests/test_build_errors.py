"""``swarmtel-recorder build`` stops an author's mistake before componentizing: exit 1, one
line naming the file and line, no traceback, no output file."""

import os
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
    # The host's rules for a description (runtime/src/plugin.rs), in the host's words.
    "recorder_name_not_ascii": (
        GOOD_RECORDER.replace('name = "start"', 'name = "métrique"') + GOOD_PLUGIN
        + "register_plugin(plugin=StartPlugin())\n",
        r"my_plugin\.py:3: invalid description: recorder name `métrique` must be 1 to 128 of A-Z, a-z, 0-9, `\.`, `:`, `-`, `_`",
    ),
    "env_var_not_locust": (
        GOOD_RECORDER + GOOD_PLUGIN
        + "    def add_arguments(self, parser):\n"
        + "        parser.add_argument('--x', type=str, default='a', env_var='CUSTOM_X')\n"
        + "register_plugin(plugin=StartPlugin())\n",
        r"my_plugin\.py:17: invalid description: option `x` names env var `CUSTOM_X`; the host reads only LOCUST_\* and SWARMTEL_\* names",
    ),
    "env_var_secret": (
        GOOD_RECORDER + GOOD_PLUGIN
        + "    def add_arguments(self, parser):\n"
        + "        parser.add_argument('--x', type=str, default='a', env_var='LOCUST_API_TOKEN')\n"
        + "register_plugin(plugin=StartPlugin())\n",
        r"my_plugin\.py:17: option `x` names env var `LOCUST_API_TOKEN`, which holds a secret of swarmtel, its Locust bridge or Locust; the host never reads it for a plugin",
    ),
    "reserved_id": (
        GOOD_RECORDER + GOOD_PLUGIN.replace("(BaseTelemetryPlugin):", "(BaseTelemetryPlugin):\n    plugin_id = 'swarmtel'")
        + "register_plugin(plugin=StartPlugin())\n",
        r"my_plugin\.py:\d+: invalid description: id `swarmtel` is reserved for the runtime",
    ),
    "long_id": (
        GOOD_RECORDER + GOOD_PLUGIN.replace("(BaseTelemetryPlugin):", "(BaseTelemetryPlugin):\n    plugin_id = 'a' * 65")
        + "register_plugin(plugin=StartPlugin())\n",
        r"invalid description: id `a{65}` must be 1 to 64 of a-z, 0-9, `-`, `_`",
    ),
    "version_with_control_character": (
        GOOD_RECORDER + GOOD_PLUGIN.replace("(BaseTelemetryPlugin):", "(BaseTelemetryPlugin):\n    version = '1\\n2'")
        + "register_plugin(plugin=StartPlugin())\n",
        r"invalid description: version `1\\n2` must be at most 64 characters, none of them control characters",
    ),
    "integer_default_over_i64": (
        GOOD_RECORDER + GOOD_PLUGIN
        + "    def add_arguments(self, parser):\n"
        + "        parser.add_argument('--n', type=int, default=2**70)\n"
        + "register_plugin(plugin=StartPlugin())\n",
        r"my_plugin\.py:17: default of --n: option n must be an integer from -2\^63 to 2\^63-1",
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


IMPORT_CASES = {
    "type_checking_block": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from locust.env import Environment\n", None),
    "optional_import": ("try:\n    import ujson as json\nexcept ImportError:\n    import json\n", None),
    "removed_stdlib_module": ("import imp\n", r"my_plugin\.py:1: imports `imp`, which the component's Python 3\.14 no longer has"),
    "sibling_imported_in_a_function": (
        "def later():\n    import helpers\n    return helpers\n",
        r"my_plugin\.py:2: imports `helpers` inside a function, and only modules imported at module level",
    ),
}


@pytest.mark.parametrize("case", sorted(IMPORT_CASES))
def test_the_import_check_follows_what_runs_in_the_component(case, write_plugin, tmp_path):
    prefix, expected = IMPORT_CASES[case]
    write_plugin("X = 1\n", "helpers.py")
    write_plugin(prefix + GOOD_RECORDER + GOOD_PLUGIN + "register_plugin(plugin=StartPlugin())\n")
    result = subprocess.run([sys.executable, "-m", "swarmtel_recorder", "check", "my_plugin.py"],
                            cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    if expected is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1
        assert re.search(expected, result.stderr), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_the_whole_package_is_bundled_data_files_and_unimported_modules_too(write_plugin, tmp_path):
    from swarmtel_recorder.build import check, plugin_files

    write_plugin(GOOD_RECORDER + GOOD_PLUGIN + "register_plugin(plugin=StartPlugin())\n", "pkg/__init__.py")
    write_plugin("def msg():\n    return 'later'\n", "pkg/later.py")
    write_plugin("{}", "pkg/data/schema.json")
    write_plugin("x", "pkg/__pycache__/junk.pyc")
    write_plugin("print('not bundled')\n", "unrelated.py")
    _info, root, files = check(str(tmp_path / "pkg"))
    bundled = sorted(os.path.relpath(f, root) for f in plugin_files(root, files))
    assert bundled == [os.path.join("pkg", "__init__.py"), os.path.join("pkg", "data", "schema.json"),
                       os.path.join("pkg", "later.py")]


def test_a_package_over_16_mib_is_refused_in_one_line(write_plugin, tmp_path):
    write_plugin(GOOD_RECORDER + GOOD_PLUGIN + "register_plugin(plugin=StartPlugin())\n", "big/__init__.py")
    (tmp_path / "big" / "table.bin").write_bytes(b"\0" * (17 * 1024 * 1024))
    result = run_build(tmp_path, "big", "-o", "out.wasm")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "swarmtel-recorder: error: big holds 17.0 MiB, over the 16 MiB the build puts into a component: "
        "move data files out of the plugin's package"]
    assert not (tmp_path / "out.wasm").exists()


def test_a_componentize_py_failure_becomes_one_line():
    from swarmtel_recorder.build import componentize_failure

    output = """Traceback (most recent call last):
  File "/venv/bin/componentize-py", line 8, in <module>
    sys.exit(script())
AssertionError: Traceback (most recent call last):
  File "/0/swarmtel_recorder_entry.py", line 2, in <module>
    importlib.import_module('imp_ssl')
  File "/0/imp_ssl.py", line 1, in <module>
    import ssl
  File "/python/ssl.py", line 100, in <module>
    import _ssl
ModuleNotFoundError: No module named '_ssl'


Caused by:
    ModuleNotFoundError: No module named '_ssl'

Stack backtrace:
   0: anyhow::error::<impl anyhow::Error>::msg
"""
    line = componentize_failure(output, os.getcwd())
    assert line == "imp_ssl.py:1: ModuleNotFoundError: No module named '_ssl' (in the component's Python)"
    assert componentize_failure("error: something odd\n", os.getcwd()) == "componentize-py failed: error: something odd"


def test_check_and_build_leave_no_pycache_in_the_source_tree(write_plugin, tmp_path):
    write_plugin("X = 1\n", "pkg/helpers.py")
    write_plugin("from pkg.helpers import X\n" + GOOD_RECORDER + GOOD_PLUGIN
                 + "register_plugin(plugin=StartPlugin())\n", "pkg/__init__.py")
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run([sys.executable, "-m", "swarmtel_recorder", "check", "pkg"],
                            cwd=str(tmp_path), capture_output=True, text=True, timeout=60, env=environment)
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.rglob("__pycache__"))

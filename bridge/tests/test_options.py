"""The --swarmtel-* options exist, show in --help and the web UI, and read their env vars."""
import os
import pytest
from locust import argument_parser

from swarmtel_locust.options import Settings

OPTIONS = {
    "endpoint": ("--swarmtel-endpoint", "LOCUST_SWARMTEL_ENDPOINT", "tcp:127.0.0.1:9", "tcp:127.0.0.1:9"),
    "config": ("--swarmtel-config", "LOCUST_SWARMTEL_CONFIG", "/etc/s.toml", "/etc/s.toml"),
    "bin": ("--swarmtel-bin", "LOCUST_SWARMTEL_BIN", "/opt/swarmtel", "/opt/swarmtel"),
    "testplan": ("--swarmtel-testplan", "LOCUST_SWARMTEL_TESTPLAN", "checkout", "checkout"),
    "run_id": ("--swarmtel-run-id", "LOCUST_SWARMTEL_RUN_ID", "run-9", "run-9"),
    "token": ("--swarmtel-token", "LOCUST_SWARMTEL_TOKEN", "t0k", "t0k"),
    "stats_interval": ("--swarmtel-stats-interval", "LOCUST_SWARMTEL_STATS_INTERVAL", "5", 5.0),
    "sample_interval": ("--swarmtel-sample-interval", "LOCUST_SWARMTEL_SAMPLE_INTERVAL", "7.5", 7.5),
    "flush_interval": ("--swarmtel-flush-interval", "LOCUST_SWARMTEL_FLUSH_INTERVAL", "0.5", 0.5),
    "buffer": ("--swarmtel-buffer", "LOCUST_SWARMTEL_BUFFER", "77", 77),
    "optional": ("--swarmtel-optional", "LOCUST_SWARMTEL_OPTIONAL", "true", True),
    "disable": ("--swarmtel-disable", "LOCUST_SWARMTEL_DISABLE", "true", True),
}


@pytest.fixture
def clean_env(monkeypatch):
    for _, env, _, _ in OPTIONS.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    return monkeypatch


def parse(args=()):
    parser = argument_parser.get_parser(default_config_files=[])
    return parser, parser.parse_args(["-f", "x.py", *args])


def test_defaults(clean_env):
    _, opts = parse()
    s = Settings.from_options(opts)
    assert s.endpoint == f"unix:/tmp/swarmtel-{os.getuid()}/serve.sock"
    assert (s.config, s.bin, s.testplan, s.run_id, s.token) == (None, "swarmtel", None, None, None)
    assert (s.stats_interval, s.flush_interval, s.buffer, s.optional, s.disable) == (3.0, 0.2, 100000, False, False)
    assert s.sample_interval == 3.0  # locust-telemetry's default recorder interval


@pytest.mark.parametrize("raw,expected", [("0", 0.0), ("-1", 0.0), ("0.001", 0.05), ("2", 2.0)])
def test_sample_interval_zero_turns_samples_off_and_tiny_ones_are_raised(clean_env, raw, expected):
    _, opts = parse(["--swarmtel-sample-interval", raw])
    assert Settings.from_options(opts).sample_interval == expected


@pytest.mark.parametrize("key", sorted(OPTIONS))
def test_env_var_sets_option(clean_env, key):
    flag, env, raw, expected = OPTIONS[key]
    clean_env.setenv(env, raw)
    _, opts = parse()
    assert getattr(opts, "swarmtel_" + key) == expected
    assert getattr(Settings.from_options(opts), key) == expected


FLAGS = ("optional", "disable")


@pytest.mark.parametrize("key", sorted(k for k in OPTIONS if k not in FLAGS))
def test_command_line_sets_option(clean_env, key):
    flag, _, raw, expected = OPTIONS[key]
    _, opts = parse([flag, raw])
    assert getattr(opts, "swarmtel_" + key) == expected


@pytest.mark.parametrize("key", FLAGS)
def test_command_line_flag(clean_env, key):
    flag = OPTIONS[key][0]
    assert getattr(parse()[1], "swarmtel_" + key) is False
    _, opts = parse([flag])
    assert getattr(opts, "swarmtel_" + key) is True
    assert getattr(Settings.from_options(opts), key) is True


def test_web_ui_and_secret(clean_env):
    parser, _ = parse()
    ui = parser.args_included_in_web_ui
    for key in OPTIONS:
        assert "swarmtel_" + key in ui
    assert set(k for k in parser.secret_args_included_in_web_ui if k.startswith("swarmtel")) == {"swarmtel_token"}


def test_help_lists_options_and_env_vars(clean_env):
    # Locust 2.47 prints `locust --help` before importing the locustfile, so plugin options
    # only show in the help of the parser built after the import (and in the web UI).
    parser, _ = parse()
    out = parser.format_help()
    for flag, env_var, _, _ in OPTIONS.values():
        assert flag in out
        assert env_var in out


def test_python_m_swarmtel_locust_help_lists_every_option_and_env_var():
    # `locust --help` is printed before the locustfile is imported, so this is where the
    # bridge's options can be read.
    import subprocess
    import sys

    from conftest import BRIDGE

    env = dict(os.environ, PYTHONPATH=BRIDGE)
    out = subprocess.run([sys.executable, "-m", "swarmtel_locust", "--help"], capture_output=True,
                         text=True, check=True, env=env).stdout
    flat = " ".join(out.split())
    for option, env, _, _ in OPTIONS.values():
        assert option in flat, option
        assert f"[env {env}]" in flat, env
    assert "Examples:" not in out, "Locust's own epilog is not repeated"

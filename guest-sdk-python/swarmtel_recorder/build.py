"""``swarmtel-recorder build``: a Python plugin module → a swarmtel `.wasm` component.

1. Imports the plugin in this (plain) Python and describes it, so an author's mistake fails
   here with ``FILE:LINE: what is wrong`` instead of deep inside componentize-py.
2. Copies exactly what the component needs into a temporary directory: the modules the
   plugin's import loaded from its own folder, this SDK, and a generated entry module that
   imports the plugin and then the SDK's WIT adapter (`swarmtel_recorder._component`).
3. Runs the pinned componentize-py with the WIT bundled in this package
   (world ``recorder-plugin``), which puts CPython, the standard library and those modules
   into one component.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

from . import dispatch
from .errors import AuthorError, traceback_location
from .testing import import_plugin

#: The componentize-py version this SDK is built and tested with.
COMPONENTIZE_PY_VERSION = "0.25.1"

#: The WIT world every plugin targets.
WORLD = "recorder-plugin"

_SDK_DIR = os.path.dirname(os.path.abspath(__file__))
_ENTRY = "swarmtel_recorder_entry"


class BuildError(Exception):
    """A build that cannot go on: the message is one line for the user."""


def wit_dir() -> str:
    """The directory holding the bundled ``telemetry.wit``."""
    path = os.path.join(_SDK_DIR, "wit")
    if not os.path.isfile(os.path.join(path, "telemetry.wit")):
        raise BuildError("the SDK's WIT is missing (%s); reinstall swarmtel-recorder" % path)
    return path


def componentize_py() -> str:
    """The componentize-py executable next to this Python, or on PATH."""
    candidates = [os.path.join(os.path.dirname(sys.executable), "componentize-py")]
    found = shutil.which("componentize-py")
    if found:
        candidates.append(found)
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise BuildError(
        "componentize-py not found: pip install componentize-py==%s" % COMPONENTIZE_PY_VERSION
    )


def _stdlib_names() -> Optional[set]:
    """The standard library's top-level module names (Python 3.10+), or None."""
    return set(getattr(sys, "stdlib_module_names", ())) or None


def check(target: str) -> "tuple[dispatch.PluginInfo, str, List[str]]":
    """Imports and describes the plugin at ``target`` in this Python; returns its description,
    its ``sys.path`` root and the files under that root the import loaded. Raises
    `AuthorError` for the author's mistakes."""
    plugin, root, modules = import_plugin(target)
    try:
        info = dispatch.describe(plugin)
    except AuthorError:
        raise
    except Exception as error:
        raise AuthorError(
            "%s while loading recorders: %s" % (type(error).__name__, error),
            traceback_location(error.__traceback__),
        ) from None
    prefix = os.path.join(root, "")
    files = []
    for name in modules:
        filename = getattr(sys.modules.get(name), "__file__", None)
        if filename and os.path.abspath(filename).startswith(prefix) and "site-packages" not in filename:
            files.append(os.path.abspath(filename))
    _check_imports(root, files)
    return info, root, sorted(set(files))


def _check_imports(root: str, files: List[str]) -> None:
    """Fails on an ``import`` of something that will not be in the component: anything but the
    standard library, swarmtel_recorder and the modules under the plugin's root."""
    import ast

    stdlib = _stdlib_names()
    if stdlib is None:  # Python < 3.10 cannot tell; componentize-py will
        return
    for filename in files:
        with open(filename, "rb") as source:
            tree = ast.parse(source.read(), filename)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                local = os.path.exists(os.path.join(root, top + ".py")) or os.path.isdir(
                    os.path.join(root, top)
                )
                if top in stdlib or top == "swarmtel_recorder" or local:
                    continue
                raise AuthorError(
                    "imports `%s`, which will not be in the component: only the standard "
                    "library, swarmtel_recorder and modules next to the plugin are bundled" % top,
                    "%s:%d" % (_shown(filename), node.lineno),
                )


def _stage(root: str, files: List[str], module: str, stage: str) -> None:
    for filename in files:
        target = os.path.join(stage, os.path.relpath(filename, root))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(filename, target)
    shutil.copytree(
        _SDK_DIR,
        os.path.join(stage, "swarmtel_recorder"),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "wit"),
    )
    with open(os.path.join(stage, _ENTRY + ".py"), "w", encoding="utf-8") as entry:
        entry.write(
            "# Generated by swarmtel-recorder build: the plugin, then the SDK's WIT adapter.\n"
            "import %s  # registers the plugin\n"
            "from swarmtel_recorder._component import Plugin, Recorder  # noqa: F401\n" % module
        )


def build(target: str, output: Optional[str] = None, quiet: bool = False) -> str:
    """Builds the plugin at ``target`` (a ``.py`` file or a package directory) into a
    component; returns the output path (default: ``<plugin id>.wasm`` here)."""
    from .testing import module_of

    _, module = module_of(target)
    info, root, files = check(target)
    output = os.path.abspath(output or info.id.replace("-", "_") + ".wasm")
    tool = componentize_py()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="swarmtel-recorder-") as stage:
        _stage(root, files, module, stage)
        environment = dict(os.environ)
        environment.pop("PYTHONPATH", None)
        command = [tool, "-d", wit_dir(), "-w", WORLD, "componentize", _ENTRY, "-p", stage, "-o", output]
        result = subprocess.run(
            command, cwd=stage, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        if result.returncode != 0:
            text = result.stdout.decode("utf-8", "replace").strip()
            raise BuildError(
                "componentize-py failed (exit %d):\n%s" % (result.returncode, text[-4000:])
            )
    if not quiet:
        size = os.path.getsize(output) / 1e6
        print(
            "built %s (%.1f MB, %.1f s): plugin %s %s, recorders %s"
            % (
                _shown(output),
                size,
                time.monotonic() - started,
                info.id,
                info.version,
                ", ".join("%s [%s]" % (r.name, "/".join(r.roles)) for r in info.recorders),
            )
        )
    return output


def _shown(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def main(argv: Optional[List[str]] = None) -> int:
    """The ``swarmtel-recorder`` command line."""
    parser = argparse.ArgumentParser(
        prog="swarmtel-recorder", description="Build and check swarmtel recorder plugins written in Python."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="build a plugin module or package into a .wasm component")
    build_command.add_argument("target", help="the plugin's .py file or package directory")
    build_command.add_argument("-o", "--output", help="the .wasm to write (default: <plugin id>.wasm)")
    build_command.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    check_command = commands.add_parser("check", help="import and describe a plugin without building it")
    check_command.add_argument("target", help="the plugin's .py file or package directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build(args.target, args.output, args.quiet)
        else:
            info, _, _ = check(args.target)
            print(
                "%s %s: %s; recorders %s"
                % (
                    info.id,
                    info.version,
                    info.description or "(no description)",
                    ", ".join(
                        "%s [%s] on %s" % (r.name, "/".join(r.roles), ", ".join(r.events))
                        for r in info.recorders
                    ),
                )
            )
    except AuthorError as error:
        print("swarmtel-recorder: error: %s" % error, file=sys.stderr)
        return 1
    except BuildError as error:
        print("swarmtel-recorder: error: %s" % error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

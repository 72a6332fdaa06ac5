"""``swarmtel-recorder build``: a Python plugin module → a swarmtel `.wasm` component.

1. Imports the plugin in this (plain) Python and describes it, so an author's mistake fails
   here with ``FILE:LINE: what is wrong`` instead of deep inside componentize-py.
2. Copies what the component needs into a temporary directory: the plugin's own files (each
   package its import loaded from its own folder, whole, and each such top-level module; at
   most `MAX_PLUGIN_BYTES`), this SDK, and a generated entry module that imports the plugin,
   the rest of its packages' modules, and then the SDK's WIT adapter
   (`swarmtel_recorder._component`).
3. Runs the pinned componentize-py with the WIT bundled in this package
   (world ``recorder-plugin``), which puts CPython, the standard library and those modules
   into one component. A failure there is reported in one line (`componentize_failure`).
"""

import argparse
import os
import re
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
    dont_write_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__ in the author's source tree
    try:
        plugin, root, modules = import_plugin(target)
    finally:
        sys.dont_write_bytecode = dont_write_bytecode
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


#: Standard library modules the component's Python (3.14) no longer has.
REMOVED_BY_314 = frozenset({
    "aifc", "asynchat", "asyncore", "audioop", "cgi", "cgitb", "chunk", "crypt", "distutils", "imghdr",
    "imp", "lib2to3", "mailcap", "msilib", "nis", "nntplib", "ossaudiodev", "pipes", "smtpd", "sndhdr",
    "spwd", "sunau", "telnetlib", "uu", "xdrlib",
})

_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


def _catches_import_error(handler: "object") -> bool:
    import ast

    kind = getattr(handler, "type", None)
    names = kind.elts if isinstance(kind, ast.Tuple) else [kind]
    return any(
        (isinstance(n, ast.Name) and n.id in _IMPORT_ERRORS)
        or (isinstance(n, ast.Attribute) and n.attr in _IMPORT_ERRORS)
        for n in names
    )


def _is_type_checking(test: "object") -> bool:
    import ast

    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: "object") -> "List[tuple]":
    """``(node, top-level name, inside a function)`` for each absolute import that runs in the
    component: not under ``if TYPE_CHECKING:``, not in a ``try`` whose ``except ImportError``
    handles its absence."""
    import ast

    found: List[tuple] = []

    def visit(node: "ast.AST", in_function: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function = True
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, in_function)
            return
        if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            if any(_catches_import_error(h) for h in node.handlers):
                for child in node.handlers + node.orelse + node.finalbody:
                    visit(child, in_function)
                return
        if isinstance(node, ast.Import):
            found.extend((node, alias.name.split(".")[0], in_function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node, node.module.split(".")[0], in_function))
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(tree, False)
    return found


def _check_imports(root: str, files: List[str]) -> None:
    """Fails on an ``import`` of something that will not be in the component: anything but the
    standard library (of Python 3.14), swarmtel_recorder and the modules under the plugin's
    root; and on an import, inside a function, of a module next to a single-file plugin that
    the build does not bundle (it bundles what is imported at build time, and whole packages)."""
    import ast

    stdlib = _stdlib_names()
    if stdlib is None:  # Python < 3.10 cannot tell; componentize-py will
        return
    bundled = {os.path.relpath(f, root).split(os.sep)[0] for f in files}
    bundled |= {name[:-3] for name in bundled if name.endswith(".py")}
    for filename in files:
        with open(filename, "rb") as source:
            tree = ast.parse(source.read(), filename)
        for node, top, in_function in _imports(tree):
            where = "%s:%d" % (_shown(filename), node.lineno)
            local = os.path.exists(os.path.join(root, top + ".py")) or os.path.isdir(os.path.join(root, top))
            if top in REMOVED_BY_314:
                raise AuthorError(
                    "imports `%s`, which the component's Python 3.14 no longer has" % top, where
                )
            if top == "swarmtel_recorder" or (top in stdlib and not local):
                continue
            if local:
                if in_function and top not in bundled:
                    raise AuthorError(
                        "imports `%s` inside a function, and only modules imported at module level "
                        "(or packages) are bundled: import it at the top of the file" % top,
                        where,
                    )
                continue
            raise AuthorError(
                "imports `%s`, which will not be in the component: only the standard "
                "library, swarmtel_recorder and modules next to the plugin are bundled" % top,
                where,
            )


#: The most a plugin's own files (its package trees and modules) may hold: they all go into
#: the component, and a data set that size belongs outside it.
MAX_PLUGIN_BYTES = 16 * 1024 * 1024

_SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def plugin_files(root: str, files: List[str]) -> List[str]:
    """What the component gets of the plugin: every file of each top-level package the import
    loaded from ``root`` (data files and modules imported later too, since a module imported
    inside a function must be in the component when it runs), and each top-level module.
    Raises `BuildError` over `MAX_PLUGIN_BYTES`."""
    tops = sorted({os.path.relpath(f, root).split(os.sep)[0] for f in files})
    found: List[str] = []
    for top in tops:
        path = os.path.join(root, top)
        if not os.path.isdir(path):
            found.append(path)
            continue
        for directory, subdirectories, names in os.walk(path):
            ignored = _SKIPPED(directory, subdirectories + names)
            subdirectories[:] = sorted(d for d in subdirectories if d not in ignored)
            found.extend(os.path.join(directory, n) for n in sorted(names) if n not in ignored)
    total = sum(os.path.getsize(f) for f in found if os.path.isfile(f))
    if total > MAX_PLUGIN_BYTES:
        raise BuildError(
            "%s holds %.1f MiB, over the %d MiB the build puts into a component: move data files "
            "out of the plugin's package"
            % (", ".join(_shown(os.path.join(root, t)) for t in tops), total / 2**20, MAX_PLUGIN_BYTES // 2**20)
        )
    return found


def _module_name(relative: str) -> Optional[str]:
    if not relative.endswith(".py"):
        return None
    parts = relative[:-3].split(os.sep)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or None


def _stage(root: str, files: List[str], module: str, stage: str) -> None:
    others = []
    for filename in plugin_files(root, files):
        relative = os.path.relpath(filename, root)
        target = os.path.join(stage, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(filename, target)
        name = _module_name(relative)
        if name and name != module:
            others.append(name)
    shutil.copytree(
        _SDK_DIR,
        os.path.join(stage, "swarmtel_recorder"),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "wit"),
    )
    with open(os.path.join(stage, _ENTRY + ".py"), "w", encoding="utf-8") as entry:
        entry.write(
            "# Generated by swarmtel-recorder build: the plugin, then the SDK's WIT adapter.\n"
            "import importlib\n"
            "from swarmtel_recorder import plugin as _plugin\n"
            "importlib.import_module(%r)  # registers the plugin (its name may hold a hyphen)\n"
            "_registered = list(_plugin._registered)\n"
            "# The component holds only what is imported now (it is snapshotted after this), so the\n"
            "# plugin's other modules are imported too, for imports inside its functions. One that\n"
            "# fails to import here is left out.\n"
            "for _name in %r:\n"
            "    try:\n"
            "        importlib.import_module(_name)\n"
            "    except Exception:\n"
            "        pass\n"
            "_plugin._registered[:] = _registered\n"
            "from swarmtel_recorder._component import Plugin, Recorder  # noqa: F401\n" % (module, others)
        )


_FRAME = re.compile(r'^\s*File "/0/([^"]+)", line (\d+)')
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b.*)$")


def componentize_failure(output: str, root: str) -> str:
    """componentize-py's output (a Python traceback from inside the component, then a Rust
    backtrace) as one line: ``FILE:LINE: Exception: message`` for the innermost frame in the
    plugin's files, when it can be told."""
    location = None
    for line in output.splitlines():
        frame = _FRAME.match(line)
        if frame:
            relative = frame.group(1)
            if relative != _ENTRY + ".py" and not relative.startswith("swarmtel_recorder/"):
                location = "%s:%s" % (_shown(os.path.join(root, relative)), frame.group(2))
    message = None
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.strip() == "Caused by:" and index + 1 < len(lines) and lines[index + 1].strip():
            message = lines[index + 1].strip()
            break
    if message is None:
        candidates = [line.strip() for line in lines if _EXCEPTION.match(line.strip())]
        candidates = [c for c in candidates if not c.startswith("AssertionError: Traceback")]
        message = candidates[-1] if candidates else (lines[-1].strip() if lines else "no output")
    message = message[:500]
    if location:
        return "%s: %s (in the component's Python)" % (location, message)
    return "componentize-py failed: %s" % message


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
            log = output + ".log"
            try:
                with open(log, "w", encoding="utf-8") as handle:
                    handle.write(text + "\n")
                full = " (componentize-py's output: %s)" % _shown(log)
            except OSError:
                full = ""
            raise BuildError(componentize_failure(text, root) + full)
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

"""Errors that are the plugin author's to fix, with the file and line they concern."""

import os
import sys
from types import TracebackType
from typing import Optional

_SDK_DIR = os.path.dirname(os.path.abspath(__file__))


_CALLER = "<caller>"


class AuthorError(Exception):
    """A mistake in the plugin's code: a hook that does not exist, an option without a type...

    ``str(error)`` is one line, ``FILE:LINE: what is wrong``, when the place is known.
    """

    def __init__(self, message: str, location: Optional[str] = _CALLER):
        super().__init__(message)
        #: What is wrong.
        self.message = message
        #: ``FILE:LINE`` in the author's code (by default: the innermost author frame on the
        #: stack), or None when unknown.
        self.location = caller_location() if location == _CALLER else location

    def __str__(self) -> str:
        return "%s: %s" % (self.location, self.message) if self.location else self.message


class Refusal(Exception):
    """A recorder refused to be created (the WIT's `create-recorder` error text)."""


def _is_sdk_file(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_SDK_DIR + os.sep)


def _is_author_file(filename: str) -> bool:
    if filename.startswith("<") or _is_sdk_file(filename):
        return False
    # The standard library and installed packages are not the author's.
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix}:
        if os.path.abspath(filename).startswith(os.path.join(prefix, "lib") + os.sep):
            return False
    return True


def _relative(filename: str) -> str:
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if relative.startswith(".." + os.sep + "..") else relative


def caller_location() -> Optional[str]:
    """``FILE:LINE`` of the innermost frame on the stack that is the author's code."""
    frame = sys._getframe(1)
    while frame is not None:
        if _is_author_file(frame.f_code.co_filename):
            return "%s:%d" % (_relative(frame.f_code.co_filename), frame.f_lineno)
        frame = frame.f_back
    return None


def traceback_location(tb: Optional[TracebackType]) -> Optional[str]:
    """``FILE:LINE`` of the innermost traceback entry in the author's code."""
    found = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if _is_author_file(filename):
            found = "%s:%d" % (_relative(filename), tb.tb_lineno)
        tb = tb.tb_next
    return found


def object_location(obj: object) -> Optional[str]:
    """``FILE:LINE`` where a function or class is defined, when Python knows it."""
    import inspect

    try:
        filename = inspect.getsourcefile(obj)  # type: ignore[arg-type]
        _, line = inspect.getsourcelines(obj)  # type: ignore[arg-type]
    except (TypeError, OSError):
        code = getattr(obj, "__code__", None)
        if code is None:
            return None
        return "%s:%d" % (_relative(code.co_filename), code.co_firstlineno)
    if filename is None:
        return None
    return "%s:%d" % (_relative(filename), line)

"""Plugin options, declared the way locust-telemetry declares them with argparse.

``add_arguments(self, parser)`` calls ``parser.add_argument_group(title, description)`` and
``group.add_argument("--custom-option", type=str, help=..., env_var=..., default=...)``.
Each argument becomes one WIT `option-spec`; its value (from the swarmtel config, then the
environment variable, then the default) arrives in ``env.parsed_options.custom_option``.
"""

from typing import Any, Dict, List, Optional, Sequence

from .errors import AuthorError, Refusal, caller_location

#: Python types an option may have, and their WIT `option-type`.
OPTION_TYPES = {str: "text", int: "integer", float: "float", bool: "boolean"}

_TYPE_NAMES = {"text": "str", "integer": "int", "float": "float", "boolean": "bool"}


class OptionSpec:
    """One declared option: name (without ``--``), type, default, help, environment variable."""

    def __init__(
        self,
        name: str,
        option_type: str,
        default: Any,
        help: str,
        env_var: Optional[str],
        dest: str,
        choices: Optional[Sequence[Any]],
        location: Optional[str],
    ):
        #: The config key, such as ``custom-option``.
        self.name = name
        #: ``text``, ``integer``, ``float`` or ``boolean``.
        self.option_type = option_type
        #: The default value (``None``: none).
        self.default = default
        #: Help text shown by ``swarmtel plugin inspect``.
        self.help = help
        #: The environment variable the host may read, such as ``LOCUST_CUSTOM_OPTION``.
        self.env_var = env_var
        #: The attribute of ``env.parsed_options`` that holds the value.
        self.dest = dest
        #: The allowed values, checked when a recorder is created.
        self.choices = list(choices) if choices is not None else None
        #: Where the author declared it.
        self.location = location
        #: For ``action="store_true"``/``"store_false"``: the value the flag stores (True or
        #: False) when the config sets the option true; None for a plain option.
        self.flag_const: Optional[bool] = None
        #: For a flag: the attribute's value when the flag is not given (argparse's default).
        self.flag_default: Any = None

    def value_of(self, value: Any) -> Any:
        """The ``env.parsed_options`` value for a resolved option value (a flag set true
        stores its constant, as argparse does; unset or false, its default)."""
        if self.flag_const is None:
            return value
        return self.flag_const if value else self.flag_default

    def check(self, value: Any) -> Any:
        """Checks a resolved value against the declared type and choices; raises `Refusal`."""
        if self.option_type == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        expected = {"text": str, "integer": int, "float": float, "boolean": bool}[self.option_type]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise Refusal(
                "option %s must be %s, got %r" % (self.name, _TYPE_NAMES[self.option_type], value)
            )
        if expected is int and not -(2**63) <= value < 2**63:
            raise Refusal(
                "option %s must be an integer from -2^63 to 2^63-1 (a 64-bit integer), got %r"
                % (self.name, value)
            )
        if self.choices is not None and value not in self.choices:
            raise Refusal(
                "option %s must be one of %s, got %r"
                % (self.name, ", ".join(repr(c) for c in self.choices), value)
            )
        return value


class ArgumentGroup:
    """A group of options, as ``parser.add_argument_group(...)`` returns it."""

    def __init__(self, parser: "ArgumentParser", title: str, description: str):
        self._parser = parser
        #: The group's title (shown nowhere yet; kept for the seed's code).
        self.title = title
        #: The group's description.
        self.description = description

    def add_argument(self, *names: str, **kwargs: Any) -> OptionSpec:
        """Declares an option like argparse: ``add_argument("--name", type=str, default=...,
        help=..., env_var=...)``; ``action="store_true"``/``"store_false"`` declare booleans."""
        return self._parser.add_argument(*names, **kwargs)


_ACCEPTED = ("type", "default", "help", "env_var", "action", "dest", "choices", "metavar")


class ArgumentParser:
    """Collects the options a plugin's ``add_arguments(parser)`` declares.

    Stands in for Locust's ``LocustArgumentParser`` (exported under that name too).
    """

    def __init__(self) -> None:
        #: Declared options, in order.
        self.options: List[OptionSpec] = []

    def add_argument_group(self, title: str = "", description: str = "", **_: Any) -> ArgumentGroup:
        """A group to add options to (groups only organise the author's code)."""
        return ArgumentGroup(self, title, description)

    def add_argument(self, *names: str, **kwargs: Any) -> OptionSpec:
        """Declares an option directly on the parser; same arguments as the group's."""
        location = caller_location()
        long_names = [n for n in names if n.startswith("--")]
        if not long_names:
            raise AuthorError(
                "option %s needs a long name such as --my-option (swarmtel options are "
                "config keys, not positional arguments)" % (", ".join(map(repr, names)) or "()"),
                location,
            )
        name = long_names[0][2:]
        unknown = sorted(set(kwargs) - set(_ACCEPTED))
        if unknown:
            raise AuthorError(
                "option --%s: %s not supported (use %s)"
                % (name, ", ".join(unknown), ", ".join(_ACCEPTED[:6])),
                location,
            )
        action = kwargs.get("action")
        default = kwargs.get("default")
        flag_const = flag_default = None
        if action in ("store_true", "store_false"):
            if kwargs.get("type") not in (None, bool):
                raise AuthorError("option --%s: %s takes no type" % (name, action), location)
            option_type = "boolean"
            # As argparse: the option set true is the flag given, which stores True
            # (store_true) or False (store_false); unset or false, the attribute keeps its
            # default (False for store_true, True for store_false).
            flag_const = action == "store_true"
            flag_default = (not flag_const) if default is None else default
            default = False
        elif action not in (None, "store"):
            raise AuthorError(
                "option --%s: action=%r is not supported (only store_true and store_false)"
                % (name, action),
                location,
            )
        else:
            python_type = kwargs.get("type")
            if python_type is None:
                raise AuthorError(
                    "option --%s has no type: add type=str, int, float or bool" % name, location
                )
            if python_type not in OPTION_TYPES:
                raise AuthorError(
                    "option --%s: type=%s is not supported (use str, int, float or bool)"
                    % (name, getattr(python_type, "__name__", python_type)),
                    location,
                )
            option_type = OPTION_TYPES[python_type]
        dest = kwargs.get("dest") or name.replace("-", "_")
        if any(option.name == name for option in self.options):
            raise AuthorError("option --%s is declared twice" % name, location)
        spec = OptionSpec(
            name,
            option_type,
            None,
            kwargs.get("help") or "",
            kwargs.get("env_var"),
            dest,
            kwargs.get("choices"),
            location,
        )
        if default is not None:
            try:
                default = spec.check(default)
            except Refusal as error:
                raise AuthorError("default of --%s: %s" % (name, error), location) from None
        spec.default = default
        spec.flag_const, spec.flag_default = flag_const, flag_default
        self.options.append(spec)
        return spec


#: The name the seed imports from Locust.
LocustArgumentParser = ArgumentParser


class ParsedOptions:
    """Resolved option values as attributes (``custom-option`` → ``custom_option``), like
    Locust's ``environment.parsed_options``."""

    def __init__(self, values: Dict[str, Any]):
        self.__dict__.update(values)

    def __repr__(self) -> str:
        inner = ", ".join("%s=%r" % item for item in sorted(self.__dict__.items()))
        return "ParsedOptions(%s)" % inner


def resolve(specs: List[OptionSpec], settings: Dict[str, Any]) -> ParsedOptions:
    """Option values by ``dest`` from the host's settings (by name), defaulted and checked."""
    values = {}
    for spec in specs:
        if spec.name in settings:
            values[spec.dest] = spec.value_of(spec.check(settings[spec.name]))
        else:
            values[spec.dest] = spec.value_of(spec.default)
    return ParsedOptions(values)

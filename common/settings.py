"""One declaration per command: a frozen dataclass whose fields are the command's options.

Each field is declared with `setting` (its default and its documentation in one place), and
everything else is built from that declaration with the standard library alone:

- `add_settings` / `build_parser`: the argparse flags and ``--help`` (a ``Literal`` type gives the
  choices, ``bool`` gives ``--x/--no-x``, ``int | None`` takes ``none``);
- `from_namespace`: the dataclass back from parsed flags (its ``__post_init__`` validates);
- `to_argv`: the command line that reproduces a value, so a harness launches children from the
  same declaration their parser reads.

The documentation lives in the field's metadata, not in source comments, so ``--help`` works on an
install without source files.

    @dataclass(frozen=True)
    class Options:
        port: int = setting(50051, "TCP port to bind; 0 = any free port.")
        mode: Literal["a", "b"] = setting("a", "How to run.")
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

__all__ = [
    "LOG_LEVELS",
    "LogLevel",
    "SettingError",
    "add_settings",
    "build_parser",
    "check_log_level",
    "docs",
    "flag_of",
    "from_namespace",
    "log_level_setting",
    "parse",
    "setting",
    "to_argv",
]

_DOC, _META = "qmix_edge.doc", "qmix_edge.cli"


class SettingError(TypeError):
    """A settings dataclass declares a field the generator cannot turn into a flag (a bug)."""


def setting(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    default_factory: Callable[[], Any] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    required: bool = False,
    parse: Callable[[str], Any] | None = None,
    show: Callable[[Any], str] | None = None,
    group: str | None = None,
    cli: bool = True,
    choices: Iterable[Any] | None = None,
) -> Any:
    """A dataclass field with its documentation and how it appears on a command line.

    ``doc``: one or more sentences, shown by ``--help`` (whitespace is normalised).
    ``flag``: the long option (default ``--`` + the name with dashes). ``required``: the flag must
    be given even though the dataclass has a default (e.g. a path a library user may leave empty).
    ``parse`` / ``show``: text to value and value to text for types the generator does not know.
    ``group``: the ``--help`` section. ``cli=False``: a library-only field, not a flag.
    ``choices``: the allowed values of a field typed more loosely than a ``Literal`` (e.g. ``str``
    whose names come from a registry; a registry dict itself may be given, and is read each time a
    parser is built); a ``Literal`` gives its choices by itself.
    """
    meta = {
        _DOC: " ".join(doc.split()),
        _META: {
            "flag": flag,
            "metavar": metavar,
            "required": required,
            "parse": parse,
            "show": show,
            "group": group,
            "cli": cli,
            "choices": choices,
        },
    }
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)
"""The logging levels a command's ``--log-level`` takes."""


def check_log_level(value: str) -> None:
    """`ValueError` naming the choices unless ``value`` is one of `LOG_LEVELS`."""
    if value not in LOG_LEVELS:
        raise ValueError(f"log_level must be one of {LOG_LEVELS}; found {value!r}")


def log_level_setting(default: LogLevel) -> Any:
    """The ``--log-level`` field every command declares (case-insensitive on the command line)."""
    return setting(default, "Logging level.", parse=str.upper)


def _cli(f: dataclasses.Field[Any]) -> dict[str, Any]:
    return f.metadata.get(_META) or {
        "flag": None,
        "metavar": None,
        "required": False,
        "parse": None,
        "show": None,
        "group": None,
        "cli": True,
        "choices": None,
    }


def docs(cls: type) -> dict[str, str]:
    """Each field's documentation, by name (empty for fields declared without `setting`)."""
    return {f.name: f.metadata.get(_DOC, "") for f in dataclasses.fields(cls)}


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def flag_of(cls: type, name: str) -> str:
    """The long option of field ``name``."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return _cli(f)["flag"] or "--" + name.replace("_", "-")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None was allowed)."""
    if get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _none_or(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_optional(text: str) -> Any:
        return None if text.strip().lower() in {"none", "null"} else parse(text)

    parse_optional.__name__ = getattr(parse, "__name__", "value")
    return parse_optional


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object, e.g. '{{\"N\": 4}}'; {e}") from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object; found {text!r}")
    return value


def _argument(cls: type, f: dataclasses.Field[Any], suppress_default: bool) -> dict[str, Any]:
    """argparse keyword arguments for field ``f``."""
    meta = _cli(f)
    hint, optional = _optional(_hints(cls)[f.name])
    default = _default(f)
    kw: dict[str, Any] = {"dest": f.name}
    if meta["required"] or default is dataclasses.MISSING:
        kw["required"] = True
    kw["default"] = argparse.SUPPRESS if suppress_default else default
    if meta["metavar"]:
        kw["metavar"] = meta["metavar"]
    if meta["parse"] is not None:
        kw["type"] = _none_or(meta["parse"]) if optional else meta["parse"]
    elif meta.get("choices") is not None:
        kw["choices"] = tuple(meta["choices"])
        kw["type"] = type(kw["choices"][0])
    elif hint is bool and not optional:
        kw["action"] = argparse.BooleanOptionalAction
    elif get_origin(hint) is Literal:
        choices = get_args(hint)
        kw["type"] = type(choices[0])
        kw["choices"] = choices
    elif hint in (int, float):
        kw["type"] = _none_or(hint) if optional else hint
        if optional:
            kw.setdefault("metavar", f"{hint.__name__.upper()}|none")
    elif hint in (str, Path):
        kw["type"] = hint
    elif get_origin(hint) in (dict, Mapping) or hint in (dict, Mapping):
        kw["type"] = _json_object
        kw.setdefault("metavar", "JSON")
    else:
        raise SettingError(
            f"{cls.__name__}.{f.name}: no command-line form for {hint!r}; give setting(parse=..., "
            "show=...)"
        )
    return kw


def _help(f: dataclasses.Field[Any], kw: dict[str, Any], default: Any) -> str:
    text = f.metadata.get(_DOC, "")
    if not kw.get("required") and default is not dataclasses.MISSING:
        shown = "none" if default is None else default
        if isinstance(shown, bool):
            shown = "on" if shown else "off"
        text = f"{text} (default: {shown})" if text else f"default: {shown}"
    return text.replace("%", "%%")


def add_settings(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    names: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    suppress_defaults: bool = False,
    titles: dict[str, str] | None = None,
    title: str | None = None,
) -> None:
    """Add one flag per field of ``cls`` (all, or ``names`` in that order, minus ``exclude``).

    Fields with a ``group`` go to an argument group of that title (``titles`` maps a group key to
    its heading); ``title`` puts the other fields in one argument group of that heading (default:
    the parser's own options). ``suppress_defaults``: an unset flag leaves no attribute, for
    callers that layer flags over other sources (a config file, a preset)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    order = list(names) if names is not None else list(fields)
    skip = set(exclude)
    groups: dict[str, Any] = {}
    default_target: Any = parser if title is None else parser.add_argument_group(title)
    for name in order:
        if name in skip:
            continue
        f = fields[name]
        meta = _cli(f)
        if not meta["cli"] or not f.init:
            continue
        kw = _argument(cls, f, suppress_defaults)
        kw["help"] = _help(f, kw, _default(f))
        target: Any = default_target
        if meta["group"]:
            key = meta["group"]
            if key not in groups:
                groups[key] = parser.add_argument_group((titles or {}).get(key, key))
            target = groups[key]
        target.add_argument(flag_of(cls, name), **kw)


def build_parser(
    cls: type, prog: str, description: str = "", epilog: str = "", **kwargs: Any
) -> argparse.ArgumentParser:
    """A parser whose options are exactly the fields of ``cls`` (see `add_settings`)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings(parser, cls, **kwargs)
    return parser


def from_namespace(cls: type, args: argparse.Namespace | dict[str, Any], **overrides: Any) -> Any:
    """``cls`` built from parsed flags (attributes named as its fields; others ignored)."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # derived fields are not flags
    kwargs = {k: v for k, v in values.items() if k in names}
    kwargs.update(overrides)
    return cls(**kwargs)


def parse(
    cls: type, parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> tuple[Any, argparse.Namespace]:
    """Parse ``argv`` and build ``cls`` from it; (the value, the namespace, for extra flags).

    A bad flag, or a value ``cls`` rejects (its ``__post_init__`` raising ``ValueError``), is a
    usage error: the parser's message and ``SystemExit(2)``, as argparse does for bad flags."""
    ns = parser.parse_args(argv)
    try:
        return from_namespace(cls, ns), ns
    except ValueError as e:
        parser.error(str(e))


def _show(cls: type, f: dataclasses.Field[Any], value: Any) -> str:
    meta = _cli(f)
    if value is None:
        return "none"
    if meta["show"] is not None:
        return str(meta["show"](value))
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True)
    return str(value)


def to_argv(obj: Any, *, all_fields: bool = False, exclude: Sequence[str] = ()) -> list[str]:
    """The flags that make `build_parser` read back ``obj`` (fields left at their default are
    omitted unless ``all_fields``; fields with ``cli=False`` never appear)."""
    cls = type(obj)
    out: list[str] = []
    for f in dataclasses.fields(cls):
        meta = _cli(f)
        if not meta["cli"] or not f.init or f.name in exclude:
            continue
        value = getattr(obj, f.name)
        default = _default(f)
        if (
            not all_fields
            and not meta["required"]
            and default is not dataclasses.MISSING
            and value == default
        ):
            continue
        flag = flag_of(cls, f.name)
        hint, optional = _optional(_hints(cls)[f.name])
        if hint is bool and not optional and meta["parse"] is None:
            out.append(flag if value else "--no-" + flag[2:])
        elif value is None and hint in (str, Path) and meta["parse"] is None:
            continue  # no flag = None for an optional path or string
        else:
            out.append(f"{flag}={_show(cls, f, value)}")  # "=": a value may start with "-"
    return out

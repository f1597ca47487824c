"""The config framework: typed sections whose fields carry their documentation, bounds and role.

A config is a tree of dataclass sections (``Section`` subclasses). Each field is declared with
``setting``: its documentation (shown by ``describe``), numeric bounds checked on load, whether it
only changes how a job runs rather than what it computes (``run_only``: kept out of a run's
identity), whether it was added after run identities existed (``hashed_if_set``: in the identity only
when set, so earlier configs keep their run ids), and a former name still accepted in files. Rules
that span several fields of a section live in its ``check`` method, next to the fields. ``load_config`` turns a YAML file plus
``key.path=value`` overrides into a section tree and rejects unknown keys (with a "did you mean"),
wrong types and bad values with a one-line message that names the full key.

Plain dataclasses rather than pydantic: every message keeps the project's "config key 'a.b': ..."
form, integers are never silently coerced from strings, and a config pickles to Ray workers as is.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from ..errors import UserError

log = logging.getLogger(__name__)

C = TypeVar("C")


class ConfigError(UserError, ValueError):
    """A config value is missing, unknown, mistyped or out of range; the message names the key."""


class FieldError(ValueError):
    """Raised by a section's ``check`` about one of its own keys; the loader prefixes the key's path."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(why)
        self.key = key


def setting(doc: str, *, default: Any = MISSING, default_factory: Any = MISSING, ge: float | None = None,
            gt: float | None = None, le: float | None = None, lt: float | None = None, run_only: bool = False,
            former_name: str | None = None, hashed_if_set: bool = False, uri: bool = False) -> Any:
    """A documented dataclass field.

    ``ge``/``gt``/``le``/``lt`` bound the value (each item of a list; None passes). ``run_only``
    marks a key that changes how a job runs, not its results: it stays out of the run's config hash.
    ``former_name`` is the key's earlier name: still accepted in files (with a warning) and used in
    the config hash, so renaming a key never changes a run's identity. ``hashed_if_set`` marks a key
    that changes results but was added after runs existed: it enters the config hash only when it
    differs from its default, so every config that leaves it alone keeps its run id. ``uri`` marks a
    location (a URI, or a list of them): the config hash covers its canonical spelling, so ``in`` and
    ``in/`` are one run.
    """
    metadata = {"doc": doc, "bounds": {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt))
                                       if v is not None},
                "run_only": run_only, "former_name": former_name, "hashed_if_set": hashed_if_set, "uri": uri}
    return field(default=default, default_factory=default_factory, metadata=metadata)


class Section:
    """Base of every config section."""

    def check(self) -> None:
        """Rules that span fields; raise ``FieldError(key, why)``. Bounds are declared on the fields."""


def _bounds_error(value: Any, bounds: dict[str, float]) -> str | None:
    """Why ``value`` (a number, or a list of numbers) breaks ``bounds``, or None."""
    items = value if isinstance(value, list) else [value]
    tests = {"ge": lambda x, b: x >= b, "gt": lambda x, b: x > b, "le": lambda x, b: x <= b, "lt": lambda x, b: x < b}
    if all(tests[k](x, b) for x in items if x is not None for k, b in bounds.items()):
        return None
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = ("]", bounds["le"]) if "le" in bounds else (")", bounds["lt"]) if "lt" in bounds else None
    if low and high:
        rule = f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    elif low:
        rule = f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    else:
        rule = f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"
    return f"{'items ' if isinstance(value, list) else ''}must be {rule}, got {value!r}"


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation, converting int->float and dict->dataclass."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {type(value).__name__}")
        return _build(annotation, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"config key '{key}': may not be null")
        errors = []
        if isinstance(value, dict):  # a mapping can only mean a section: its own error, not "matches no type"
            options = tuple(o for o in options if dataclasses.is_dataclass(o)) or options
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"config key '{key}': {value!r} matches no allowed type")
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"config key '{key}': {value!r} is not one of {list(allowed)}")
        return value
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}': expected a list, got {type(value).__name__}")
        return [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {type(value).__name__}")
        return dict(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")


def _renamed(cls: type, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``data`` with keys under a field's former name moved to its current name."""
    former = {f.metadata["former_name"]: f.name for f in dataclasses.fields(cls) if f.metadata.get("former_name")}
    if not any(k in former for k in data):
        return data
    out = {}
    for key, value in data.items():
        if key in former:
            log.warning("config key '%s%s' is now '%s%s'", prefix, key, prefix, former[key])
            if former[key] in data:
                raise ConfigError(f"config key '{prefix}{key}' is the former name of '{prefix}{former[key]}'; "
                                  "give only one of them")
        out[former.get(key, key)] = value
    return out


def _build(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    data = _renamed(cls, data, prefix)
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known keys: {', '.join(names)})"
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
    kwargs = {}
    for f in fields:
        if f.name not in data:
            continue
        value = data[f.name]
        if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, dict) and callable(f.default_factory):
            # a partial section overrides the field's own default (e.g. one key of a detector's
            # encoder), not the section class's defaults
            # (its keys renamed first: a former name beside the default's current name is no duplicate)
            value = _merged(dataclasses.asdict(f.default_factory()),
                            _renamed(hints[f.name], value, f"{prefix}{f.name}."))
        try:
            kwargs[f.name] = _convert(value, hints[f.name], prefix + f.name)
        except ConfigError as err:  # a wrong type names what the key wants, e.g. run_date's format
            doc = f.metadata.get("doc", "")
            own = str(err).startswith(f"config key '{prefix}{f.name}': expected")
            raise ConfigError(f"{err}: {doc.split('. ')[0].rstrip('.')}" if own and doc else str(err)) from None
    cfg = cls(**kwargs)
    for f in fields:  # sections left at their defaults must be valid too (e.g. no inputs given at all)
        if f.name not in data and dataclasses.is_dataclass(hints[f.name]):
            validate(getattr(cfg, f.name), f"{prefix}{f.name}.")
    _check_section(cfg, prefix)
    return cfg


def _check_section(cfg: Any, prefix: str) -> None:
    """The section's declared bounds, then its own ``check``; errors name the full key."""
    for f in dataclasses.fields(cfg):
        bounds = f.metadata.get("bounds")
        if bounds:
            why = _bounds_error(getattr(cfg, f.name), bounds)
            if why:
                raise ConfigError(f"config key '{prefix}{f.name}': {why}")
    try:
        cfg.check()
    except FieldError as err:
        raise ConfigError(f"config key '{prefix}{err.key}': {err}") from None


def validate(cfg: Any, prefix: str = "") -> None:
    """Check a section tree that was built in code (defaults, or fields set after loading)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, f"{prefix}{f.name}.")
    _check_section(cfg, prefix)


def _merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``, recursing into mappings present in both."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key '{path}': '{k}' is not a mapping")
    node[keys[-1]] = value


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``a.b.c=value`` override; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key.path=value")
    path, raw = override.split("=", 1)
    try:
        value = _parse_yaml(raw, f"override {override!r}")
    except ConfigError:  # {line}/{name}/... or a: b is no YAML value: the user meant the text as written
        value = raw
    if isinstance(value, dict) and value and all(v is None for v in value.values()):
        value = raw  # {name} is a group template, never a mapping of keys without values
    _set_path(data, path.strip(), value)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (for manifests and result files)."""
    return dataclasses.asdict(cfg)


def config_from_dict(cls: type[C], data: dict[str, Any] | None, overrides: list[str] | None = None) -> C:
    """Validate a plain mapping (e.g. parsed YAML) into the config dataclass ``cls``."""
    data = dict(data or {})
    for override in overrides or []:
        apply_override(data, override)
    return _build(cls, data)


def with_values(cfg: C, values: dict[str, Any]) -> C:
    """A copy of ``cfg`` with dotted keys set to plain values, validated like a config file."""
    data = config_to_dict(cfg)
    for path, value in values.items():
        _set_path(data, path, value)
    return config_from_dict(type(cfg), data)


class _PlainLoader(yaml.SafeLoader):
    """``safe_load`` without YAML's timestamps: an unquoted 2026-11-22 stays the text the user wrote
    (and 2026-13-45 a text that the key's own check refuses, not a traceback from the parser)."""


_PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _parse_yaml(text: str, where: str) -> Any:
    """Plain YAML data (``safe_load``: tags such as ``!!python/object`` are refused, never run); a
    problem is one line that says where."""
    try:
        return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a SafeLoader without timestamps
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where} is not valid YAML{at}: {problem}") from None


def load_config(path: str | Path, cls: type[C], overrides: list[str] | None = None) -> C:
    """Read a YAML config file into ``cls``; a missing file or bad key raises ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    data = _parse_yaml(path.read_text(), f"config file {path}")
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return config_from_dict(cls, data, overrides)


def identity_view(cfg: Any, spelling: Callable[[str], str] = str) -> dict[str, Any]:
    """The keys that change results, under the names they had when run identities were introduced
    (``former_name``), locations (``uri`` keys) in the one ``spelling`` given: what a run's config hash
    covers."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("run_only"):
            continue
        value = getattr(cfg, f.name)
        if f.metadata.get("hashed_if_set"):
            if value == (f.default if f.default is not MISSING else f.default_factory()):
                continue
        name = f.metadata.get("former_name") or f.name
        if f.metadata.get("uri") and value is not None:
            value = [spelling(v) for v in value] if isinstance(value, list) else spelling(value)
        out[name] = identity_view(value, spelling) if dataclasses.is_dataclass(value) else _plain(value)
    return out


def _plain(value: Any) -> Any:
    """Lists and mappings copied as plain data (what ``dataclasses.asdict`` gives for a field)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def describe(cls: type, prefix: str = "", defaults: Any = None) -> str:
    """Every key of ``cls`` with its type, default and documentation, one per line. Defaults are those
    of the enclosing section (a detector's encoder defaults differ from BackboneConfig's own)."""
    defaults = cls() if defaults is None else defaults
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            lines.append(f"{key}: {f.metadata.get('doc', '')}")
            lines.append(describe(hints[f.name], key + ".", default))
            continue
        hint = hints[f.name]
        type_name = hint.__name__ if isinstance(hint, type) else re.sub(r"[\w.]+\.(\w+)", r"\1", str(hint))
        lines.append(f"{key} ({type_name}, default {default!r}): {f.metadata.get('doc', '')}")
    return "\n".join(lines)

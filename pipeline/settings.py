"""Frozen settings dataclasses: fields that explain themselves, choices taken from the
registries, values checked by type, and files (YAML or JSON) read with errors that name the key.

A field made with ``setting(default, help, choices=REGISTRY)`` takes one of the registry's
names; the registry is read when a value is checked, so an entry registered later is valid
without any other edit. The CLI builds one flag per field from the same metadata.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterable
from dataclasses import field, fields
from pathlib import Path


def setting(default: object, help: str, choices: Iterable[str] | None = None) -> typing.Any:
    """A dataclass field with its one-line meaning (``--help``) and, optionally, the registry
    (a dict or a sequence of names) whose names it takes."""
    return field(default=default, metadata={"help": help, "choices": choices})


def flag(name: str) -> str:
    """The command-line flag of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def field_choices(item) -> tuple[str, ...] | None:
    """The names a field takes (its registry's, in registry order), or None."""
    registry = item.metadata.get("choices")
    return None if registry is None else tuple(registry)


def check_choices(settings: object) -> None:
    """Refuse a field value outside its registry, naming the flag and the valid values."""
    for item in fields(settings):
        allowed, value = field_choices(item), getattr(settings, item.name)
        if allowed is not None and value is not None and value not in allowed:
            raise ValueError(f"{flag(item.name)} {value!r} is not valid; valid values: "
                             f"{', '.join(allowed)}")


def base_type(hint: object) -> tuple[object, bool]:
    """``(type, optional)`` of a hint such as ``int | None``."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def _kind_ok(kind: object, value: object) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return isinstance(value, (list, tuple)) and all(_kind_ok(item, v) for v in value)
    return True


def _described(kind: object) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if typing.get_origin(kind) is tuple:
        plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        return f"a list of {plural.get(typing.get_args(kind)[0], 'values')}"
    return names.get(kind, str(kind))


def _as_kind(kind: object, value: object) -> object:
    """A checked value in the field's own type: lists become tuples, integers given for
    numbers become floats (``lr: 1`` is 1.0), so a file and the flags give equal settings."""
    if value is None:
        return None
    if kind is float:
        return float(value)
    if typing.get_origin(kind) is tuple:
        return tuple(_as_kind(typing.get_args(kind)[0], v) for v in value)
    return value


def from_values(cls: type, values: object, source: str) -> typing.Any:
    """``cls(**values)`` after checking keys and types; errors name ``source`` and the key."""
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping of settings, got "
                         f"{type(values).__name__}")
    known = {item.name: item for item in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r} (valid keys: "
                         f"{', '.join(known)})")
    hints = typing.get_type_hints(cls)
    fixed = {}
    for key, value in values.items():
        kind, optional = base_type(hints[key])
        if not (value is None and optional) and not _kind_ok(kind, value):
            raise ValueError(f"{source}: key {key!r} must be {_described(kind)}"
                             f"{' or null' if optional else ''}, got {value!r}")
        fixed[key] = _as_kind(kind, value)
    try:
        return cls(**fixed)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


def read_file(path: Path) -> dict:
    """The mapping in a YAML (``.yaml``/``.yml``) or JSON file; one-line errors naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist: pass a YAML or JSON file "
                                "(configs/ holds examples; a run's config.json replays it)")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            values = _yaml_load(text)
        else:
            values = json.loads(text)
    except Exception as error:  # yaml and json raise several kinds; all mean a bad file
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path} is not valid {path.suffix.lstrip('.').upper() or 'JSON'}: "
                         f"{first}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of settings (key: value), got "
                         f"{type(values).__name__}")
    return values


def _yaml_load(text: str) -> object:
    """YAML with ``1e-3`` read as a number (YAML 1.1 needs ``1.0e-3``; recipes write both)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that also reads exponents without a dot as floats."""

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    return yaml.load(text, Loader=Loader)

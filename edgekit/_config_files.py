"""Reading user YAML files (inventories, farm files) into pydantic models with one-line errors.

Every message names the file (relative to the working directory when it is below it), the key and the
problem, so a bad file costs one line and exit code 2 (``ConfigError``), never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edgekit.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the (sub)model at ``loc`` accepts, for 'unknown key' messages."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            break
        model = nested[0]
    return [str(f.validation_alias or f.alias or key) for key, f in model.model_fields.items()]


def describe_error(error: Any, model: type[BaseModel]) -> str:
    """One pydantic error as 'key: problem, got value'."""
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) or "entry"
    kind = error["type"]
    got = error.get("input")
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        allowed = ", ".join(p.strip("' ") for p in expected.replace(" or ", ", ").split(","))
        return f"{key} must be one of {allowed}, got {got!r}"
    if kind == "extra_forbidden":
        return f"unknown key '{key}'; allowed: {', '.join(_allowed_keys(model, loc))}"
    if kind == "missing":
        return f"missing key '{key}'"
    message = str(error["msg"]).removeprefix("Value error, ")
    if not loc:
        return message
    return f"{key}: {message}, got {got!r}"


def validate(model: type[M], data: object, context: str) -> M:
    """``model`` from ``data``, or a ConfigError '<context>: <every problem>'."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(describe_error(e, model) for e in exc.errors())
        raise ConfigError(f"{context}: {details}") from exc


def load_mapping(path: Path, *, what: str, expected: str, empty_ok: bool = False) -> dict[str, Any]:
    """The YAML mapping in ``path`` ('<file>: cannot read <what>', 'not valid YAML', 'expected ...')."""
    where = display_path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {what}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if raw is None and empty_ok:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected {expected}, got {type(raw).__name__}")
    return raw

"""farm.yaml: what a farm measures, validated at the edge, and its expansion into cells.

A farm names models, recipes, devices (names, ``tag:<class|soc|label>`` or ``all``) and named
workloads; every (model, recipe, device, workload) is one cell, keyed by a content hash of exactly what
it measures, so the same farm.yaml run again finds its finished cells in the store. Every problem
(unknown key, unknown model, recipe or device, a tag that matches nothing) is a ``ConfigError`` or
``UnknownName`` naming the file and the key, raised before anything is exported or run.

This module reads configuration only; it must not export, connect to a device or open the store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgekit._config_files import display_path, load_mapping, validate
from edgekit.errors import ConfigError, UnknownName
from edgekit.export.recipes import Recipe
from edgekit.inventory import LOCAL_NAME, DeviceEntry
from edgekit.workload import Workload

TAG_PREFIX = "tag:"
ALL = "all"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FarmFile(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    models: list[str] = Field(min_length=1)
    recipes: list[str] = Field(min_length=1)
    devices: list[str] = Field(min_length=1)
    workloads: dict[str, Workload] = Field(min_length=1)
    retries: int = Field(default=3, ge=0, le=100)  # transient retries per cell
    backoff_s: float = Field(default=1.0, ge=0, le=3600)  # exponential backoff base
    quarantine_after: int = Field(default=3, ge=1, le=1000)  # consecutive failures of one device


@dataclass(frozen=True)
class Cell:
    """One (model, recipe, device, workload) of the matrix."""

    key: str
    model: str
    recipe: str  # the recipe's name
    device: str
    workload_name: str
    workload: Workload


@dataclass
class Farm:
    """A validated farm.yaml with its recipes resolved (paths are relative to the file)."""

    path: Path
    spec: FarmFile
    recipes: dict[str, Recipe]  # by recipe name, in file order

    @property
    def name(self) -> str:
        return self.spec.name


def recipe_sha256(recipe: Recipe) -> str:
    """sha256 of the resolved recipe's content: an edited recipe file is a different recipe, whatever its name."""
    return hashlib.sha256(json.dumps(recipe.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def cell_key(model: str, recipe: Recipe, device: str, workload_name: str, workload: Workload) -> str:
    """A stable content key: the same measurement gets the same key in every run of the farm, and a changed
    recipe (its content, not only its name) or workload a new one, so resume re-runs it."""
    payload = {"model": model, "recipe": recipe.name, "recipe_sha256": recipe_sha256(recipe), "device": device,
               "workload": workload_name, "request": workload.model_dump()}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _check_model(where: str, spec: str, base: Path) -> None:
    """Fail fast on a model that cannot exist, without loading (or training) it."""
    from edgekit.models import known_aliases

    if spec in known_aliases():
        return
    if spec.startswith(("/", "./", "../", "~")) or spec.endswith((".gguf", ".safetensors")):
        path = Path(spec).expanduser()
        if not (path if path.is_absolute() else base / path).exists():
            raise ConfigError(f"{where}: models: model path '{spec}' does not exist")
        return
    if "/" in spec:  # a hub id, resolved when exported
        return
    raise UnknownName("model", spec, known_aliases())


def _resolve_recipe(where: str, spec: str, base: Path) -> Recipe:
    from edgekit.export.recipes import resolve_recipe

    if spec.endswith((".yaml", ".yml")):
        path = Path(spec).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ConfigError(f"{where}: recipes: recipe file '{spec}' does not exist")
        return resolve_recipe(str(path))
    return resolve_recipe(spec)


def load_farm(path: str | Path) -> Farm:
    """Parse and validate farm.yaml (models and recipes too); devices are checked by ``expand``."""
    path = Path(path).expanduser()
    where = display_path(path)
    raw = load_mapping(path, what="farm file",
                       expected="a mapping with name, models, recipes, devices and workloads")
    spec = validate(FarmFile, raw, where)
    for key in ("models", "recipes", "devices"):
        values: list[str] = getattr(spec, key)
        if len(set(values)) != len(values):
            raise ConfigError(f"{where}: {key}: lists an entry more than once")
    base = path.resolve().parent
    for model in spec.models:
        _check_model(where, model, base)
    recipes: dict[str, Recipe] = {}
    for item in spec.recipes:
        recipe = _resolve_recipe(where, item, base)
        if recipe.name in recipes:
            raise ConfigError(f"{where}: recipes: two entries are both recipe '{recipe.name}'")
        recipes[recipe.name] = recipe
    return Farm(path=path, spec=spec, recipes=recipes)


def _matches(entry: DeviceEntry, tag: str) -> bool:
    tags = entry.tags
    return tag in (tags.device_class, tags.soc) or tag in tags.labels


def select_devices(farm: Farm, available: list[DeviceEntry]) -> list[DeviceEntry]:
    """The devices the farm names, in inventory order; names must exist, tags must match something."""
    where = display_path(farm.path)
    chosen: dict[str, DeviceEntry] = {}
    by_name = {e.name: e for e in available}
    for item in farm.spec.devices:
        if item == ALL:
            matched = [e for e in available if e.name != LOCAL_NAME]
            if not matched:
                raise ConfigError(f"{where}: devices: 'all' matches no device (none is attached or running)")
        elif item.startswith(TAG_PREFIX):
            tag = item.removeprefix(TAG_PREFIX)
            matched = [e for e in available if _matches(e, tag)]
            if not matched:
                known = sorted({t for e in available for t in (e.tags.device_class, e.tags.soc, *e.tags.labels) if t})
                raise ConfigError(
                    f"{where}: devices: '{item}' matches no device; known tags: {', '.join(known) or 'none'}"
                )
        elif item in by_name:
            matched = [by_name[item]]
        else:
            raise UnknownName("device", item, list(by_name))
        for entry in matched:
            chosen.setdefault(entry.name, entry)
    order = [e.name for e in available]
    return sorted(chosen.values(), key=lambda e: order.index(e.name))


def expand(farm: Farm, devices: list[DeviceEntry]) -> list[Cell]:
    """Every cell of the matrix, grouped by (model, recipe) so the first artifacts are needed first."""
    cells = []
    for model in farm.spec.models:
        for recipe, resolved in farm.recipes.items():
            for entry in devices:
                for name, workload in farm.spec.workloads.items():
                    key = cell_key(model, resolved, entry.name, name, workload)
                    cells.append(Cell(key, model, recipe, entry.name, name, workload))
    return cells

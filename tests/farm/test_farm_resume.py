"""Resume decides by content: a cell is skipped only when exactly what it measures is already stored."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path

import yaml

from edgekit.export.recipes import recipes_dir
from edgekit.farm.backend import Job, JobOutcome
from edgekit.inventory import DeviceEntry
from tests.farm.conftest import store_rows, write_farm


class _NoJobs:
    """A backend with one device that must never be given a job (the farm is stopped before it starts)."""

    def devices(self) -> list[DeviceEntry]:
        return [DeviceEntry(name="board-x", transport="local")]

    def submit(self, job: Job) -> concurrent.futures.Future[JobOutcome]:
        raise AssertionError(f"no job expected, got {job.cell_key}")

    def close(self) -> None:
        pass


def _stopped_run(farm_path: Path) -> int:
    """How many cells a run of the farm finds already stored (it is stopped before anything runs)."""
    from edgekit.farm.config import load_farm
    from edgekit.farm.scheduler import run_farm

    stop = threading.Event()
    stop.set()
    result = run_farm(load_farm(farm_path), _NoJobs(), live=False, stop=stop, grace_s=0.0)
    return result.skipped


def test_an_edited_recipe_file_is_a_new_cell_and_resume_runs_it_again(tmp_path: Path) -> None:
    from edgekit.farm.config import expand, load_farm
    from edgekit.store import Store

    recipe = yaml.safe_load((recipes_dir() / "onnx-fp32.yaml").read_text())
    recipe["name"] = "mine"
    recipe_path = tmp_path / "mine.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    farm_path = write_farm(tmp_path / "farm.yaml", name="edits", recipes=["mine.yaml"], devices=["board-x"])
    (cell,) = expand(load_farm(farm_path), _NoJobs().devices())
    with Store() as store:  # the cell as a finished run of the farm left it
        store.con.execute("INSERT INTO farm_cells (farm, cell_key, model, recipe, device, workload, status, "
                          "attempts, finished_at) VALUES ('edits', ?, ?, 'mine', 'board-x', 'short', 'ok', 1, "
                          "now())", [cell.key, cell.model])
    assert _stopped_run(farm_path) == 1  # unchanged: resume skips it

    recipe["max_context"] = recipe.get("max_context", 512) // 2  # same name, different artifact
    recipe_path.write_text(yaml.safe_dump(recipe))
    assert _stopped_run(farm_path) == 0  # edited: the stored cell is stale, the cell runs again
    assert store_rows("SELECT count(*) FROM farm_cells WHERE farm = 'edits' AND status = 'ok'")[0][0] == 1

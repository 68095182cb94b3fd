"""Fixtures for profiling tests: tiny artifacts (exported once per session into the shared cache) and
the emulated board and phone opened as ``Device``s whose Python is the host interpreter (the emulated
devices see it read-only), so the agent runs there exactly as it would on a real board."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekit.devices.adb import AdbDevice
from edgekit.devices.ssh import SshDevice
from edgekit.emulator import _board_files
from edgekit.profile.run import ProfileRequest
from edgekit.workload import Workload
from tests.fixtures.board import BoardHandle
from tests.fixtures.phone import Phone
from tests.native.conftest import native_builds, native_runner

__all__ = ["native_builds", "native_runner"]

DEVICE_PYTHON = sys.executable
PHONE_WORKDIR = "/data/local/tmp/edgekit"


def make_request(artifact: Path, defaults: dict[str, object], *, agent_args: tuple[str, ...] = (), retries: int = 1,
                 **workload: object) -> ProfileRequest:  # fmt: skip
    """A profile request of ``artifact``: ``defaults`` with ``workload`` overrides."""
    return ProfileRequest(artifact, Workload(**{**defaults, **workload}), retries=retries, agent_args=agent_args)


def _export(recipe: str, out_root: Path, cache: Path, max_context: int | None = None) -> Path:
    from edgekit.export.pipeline import export
    from edgekit.export.recipes import parse_recipe, resolve_recipe

    resolved = resolve_recipe(recipe)
    if max_context is not None:
        resolved = parse_recipe({**resolved.model_dump(), "max_context": max_context}, f"'{recipe}'")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEKIT_CACHE", str(cache))
        mp.setenv("EDGEKIT_HOME", str(out_root / "home"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        return export("tiny-llama", resolved, out_root / f"{recipe}-{resolved.max_context}").out_dir


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    return _export("onnx-fp32", tmp_path_factory.mktemp("profile-artifacts"), shared_cache)


@pytest.fixture(scope="session")
def tiny_pte(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    return _export("pte-fp32", tmp_path_factory.mktemp("profile-artifacts"), shared_cache)


@pytest.fixture(scope="session")
def tiny_onnx_long(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """onnx-fp32 with 1024 positions: GenAI decodes the tiny model so fast that a repetition needs ~1000 tokens
    to last long enough for energy windows measured to one 10 ms sensor tick."""
    return _export("onnx-fp32", tmp_path_factory.mktemp("profile-artifacts"), shared_cache, max_context=1024)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    return _export("gguf-q8_0", tmp_path_factory.mktemp("profile-artifacts"), shared_cache)


def board_device(board: BoardHandle) -> SshDevice:
    return SshDevice(board.alias, name=board.alias, ssh_config=str(board.ssh_config),
                     workdir=_board_files.WORKDIR)


@pytest.fixture
def board_dev(shared_board: BoardHandle) -> Iterator[SshDevice]:
    device = board_device(shared_board)
    try:
        yield device.connect()
    finally:
        device.close()


def phone_device(phone: Phone) -> AdbDevice:
    return AdbDevice(phone.serial, name="phone", server_port=phone.server.port, workdir=PHONE_WORKDIR)


@pytest.fixture
def phone_dev(phone: Phone) -> Iterator[AdbDevice]:
    device = phone_device(phone)
    try:
        yield device
    finally:
        device.close()

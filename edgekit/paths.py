"""Where edgekit keeps what it writes: one home directory, overridable with ``EDGEKIT_HOME``.

Tests isolate themselves by pointing ``EDGEKIT_HOME`` at a temporary directory; nothing else in the
code should invent a location of its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def home() -> Path:
    env = os.environ.get("EDGEKIT_HOME")
    path = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("edgekit"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(*parts: str) -> Path:
    """Content-addressed caches (converted models, artifacts); ``EDGEKIT_CACHE`` moves them elsewhere,
    e.g. to share one cache between several homes."""
    env = os.environ.get("EDGEKIT_CACHE")
    base = Path(env).expanduser() if env else home() / "cache"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path

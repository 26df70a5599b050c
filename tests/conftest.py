"""Shared fixtures.

``synth_study(seed=..., **kwargs)`` writes a synthetic study once per session and argument
set (see ``models.synth.generate_study``) and returns its folder, so many test files can
share a few studies cheaply. Pass ``matrix=128`` for small, fast images.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synth_study(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    from models.synth import generate_study

    cache: dict[str, Path] = {}

    def make(seed: int = 0, **kwargs: object) -> Path:
        key = json.dumps([seed, kwargs], sort_keys=True, default=str)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"synth_{seed}_")
            generate_study(out, seed, **kwargs)  # type: ignore[arg-type]
            cache[key] = out
        return cache[key]

    return make

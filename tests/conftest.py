"""Shared fixtures.

``synth_study(seed=..., **kwargs)`` writes a synthetic study once per session and argument
set (see ``models.synth.generate_study``) and returns its folder, so many test files can
share a few studies cheaply. Pass ``matrix=128`` for small, fast images.

benchmarks/ goes on ``sys.path`` here, once for every test folder: its `_harness` (processes,
polling, ports) and `load` (study writers, exactly-once checks) are the tests' scaffolding
too, so a test and a benchmark exercise the node the same way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


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


#: grades forced on the study the grading tests share (the rest are drawn from the seed)
GRADED_STUDY_GRADES = {
    "spinal_canal_stenosis_l4_l5": "Severe",
    "left_neural_foraminal_narrowing_l4_l5": "Severe",
    "right_neural_foraminal_narrowing_l4_l5": "Normal/Mild",
    "spinal_canal_stenosis_l2_l3": "Normal/Mild",
}


@pytest.fixture(scope="session")
def graded_study(synth_study: Callable[..., Path]) -> Path:
    """One synthetic study with known severe and normal findings, for the grading tests."""
    return synth_study(seed=4242, grades=GRADED_STUDY_GRADES)


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium_browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a downloaded browser), headless, shared
    by every browser test of this session or xdist worker. Tests open their own context."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap.sh installs Debian's chromium")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()

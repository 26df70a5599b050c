"""Stenosis grading: five conditions at every disc level, by two graders.

``grade_study`` is the one entry point the pipeline uses; it lives in
:mod:`models.grading.grade` and is re-exported here lazily so importing the package does not
pull in torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["grade_study"]


def __getattr__(name: str) -> Any:
    if name == "grade_study":
        from models.grading.grade import grade_study

        return grade_study
    raise AttributeError(name)

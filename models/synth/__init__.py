"""Synthetic lumbar spine MR studies with exact ground truth.

Used for tests, training and load tests: a seed gives a patient (anatomy, pathology per
level and side), three series as a PACS routes them, SPIDER-style labels and ``truth.json``.
"""

from __future__ import annotations

from .generate import generate_study

__all__ = ["generate_study"]

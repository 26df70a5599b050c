"""TID 1500 measurement report of the graded findings."""

from models.reports.sr.sop import build_sr, check_findings

__all__ = ["build_sr", "check_findings"]

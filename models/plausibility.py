"""Physiological ranges of the measurements the node reports.

A caliper on a mis-segmented structure can return any number; printing it beside a grade
would lend it authority it does not have. Any value outside the range an adult lumbar
spine can show, diseased or not, is withheld with this reason instead. The ranges are wide
on purpose (a collapsed disc, a severe stenosis and a high-grade slip all stay inside):
they catch failures, not disease.
"""

from __future__ import annotations

from typing import Final

#: name -> (low, high, unit). Sources: adult lumbar anatomy (disc height 2-17 mm, dural sac
#: AP 3-25 mm, body height 20-35 mm; Twomey & Taylor, Spine 1985; Verbiest 1977), widened.
RANGES: Final[dict[str, tuple[float, float, str]]] = {
    "canal_ap_diameter": (1.5, 30.0, "mm"),
    "canal_area": (15.0, 400.0, "mm2"),
    "disc_height_anterior": (0.5, 20.0, "mm"),
    "disc_height_posterior": (0.5, 20.0, "mm"),
    "disc_height_mean": (0.5, 20.0, "mm"),
    "vertebral_body_height": (10.0, 45.0, "mm"),
    "listhesis": (-12.0, 25.0, "mm"),
}


def implausible(name: str, value: float) -> str | None:
    """The reason a value must be withheld, or None when it is physiologically possible."""
    bounds = RANGES.get(name)
    if bounds is None:
        return None
    lo, hi, unit = bounds
    if not (lo <= float(value) <= hi):
        return f"{name} withheld: outside the physiological range ({lo:g}\u2013{hi:g} {unit})"
    return None


def screen(records: list[dict]) -> tuple[list[dict], list[str]]:
    """Records that may be reported, and the reasons for those withheld."""
    kept, notes = [], []
    for rec in records:
        why = implausible(str(rec.get("name")), float(rec.get("value", 0.0)))
        if why is None:
            kept.append(rec)
        else:
            notes.append(why)
    return kept, notes

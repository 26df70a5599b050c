"""Pillow drawing of the key image: mid-sagittal slice, outlined levels, grade table.

A key image is what a radiologist sees in a PACS that shows neither SEG nor SR, so
everything must be burned in: the outlines, the level names, the 25 grades and the notice
that the result is the machine's and needs review.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from lumbar_common.vocabulary import CANAL, FORAMEN, LEVELS, SUBARTICULAR, rsna_key
from models.reports.seg.codes import SEGMENT_KINDS
from models.reports.sr.codes import NOTICE
from models.reports.sr.discs import BINARY, present_findings

#: Image part is scaled to at least this many rows so that burned-in text stays legible.
MIN_ROWS: Final = 512
BANNER: Final = 44
#: Distance of a vertebra's name from the front of its body, in key image pixels.
NAME_GAP: Final = 34
PANEL: Final = 560
COL_W: Final = 90
ROW_H: Final = 44
#: Frame and mark of a cell whose finding needs review by a radiologist
REVIEW_RGB: Final = (255, 230, 0)
GRADER_LETTER: Final = {"measurement": "M", "learned": "L"}
LEGEND: Final = (
    "N/M normal or mild, Mod moderate, Sev severe,",
    "n/a not assessable. Letter: grader that decided",
    "(M measurement, rule-based; L learned).",
    "Yellow frame !: review required; second line:",
    "the other grader's grade when graders disagree.",
)
COLUMNS: Final = (
    ("Canal", CANAL, None),
    ("L foramen", FORAMEN, "left"),
    ("R foramen", FORAMEN, "right"),
    ("L subart", SUBARTICULAR, "left"),
    ("R subart", SUBARTICULAR, "right"),
)
CELL: Final[dict[str | None, tuple[str, tuple[int, int, int]]]] = {
    "Normal/Mild": ("N/M", (40, 140, 60)),
    "Moderate": ("Mod", (215, 135, 20)),
    "Severe": ("Sev", (200, 30, 30)),
    None: ("n/a", (100, 100, 100)),
}
#: Height of one disc table row, and of the disc table's title, header and legend
DISC_ROW_H: Final = 24
DISC_LEGEND: Final = (
    "Pf Pfirrmann grade 1-5, Mo Modic type 0-3: learned",
    "from real expert gradings (SPIDER). Present findings:",
    "Narr narrowing, Hern herniation, Bulg bulging,",
    "Listh listhesis, EPu/EPl upper/lower endplate defect.",
)
#: Pfirrmann grade -> cell colour (I–II green, III amber, IV–V red)
PFIRRMANN_RGB: Final = {
    1: (40, 140, 60),
    2: (40, 140, 60),
    3: (215, 135, 20),
    4: (200, 30, 30),
    5: (200, 30, 30),
}
ABBREVIATION: Final = {key: abbr for key, (_, _, abbr) in BINARY.items()}
_VERTEBRA_NAMES: Final = {
    k.label_value: k.label.split()[0] for k in SEGMENT_KINDS if k.kind in ("vertebra", "sacrum")
}


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def window(pixels: np.ndarray) -> np.ndarray:
    """Grey values to 8 bits between the 1st and 99.5th percentile."""
    data = np.asarray(pixels, dtype=np.float64)
    lo, hi = np.percentile(data, [1.0, 99.5])
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((data - lo) * scale, 0, 255).astype(np.uint8)


def _resize(
    grey: np.ndarray, labels: np.ndarray | None, spacing: Sequence[float]
) -> tuple[Image.Image, np.ndarray | None]:
    """Square pixels (anisotropic spacing is undone) and at least :data:`MIN_ROWS` rows."""
    rows, cols = grey.shape
    height_mm, width_mm = rows * float(spacing[0]), cols * float(spacing[1])
    out_rows = max(MIN_ROWS, rows)
    out_cols = max(1, round(out_rows * width_mm / height_mm))
    image = Image.fromarray(grey).resize((out_cols, out_rows), Image.Resampling.BILINEAR)
    if labels is None:
        return image, None
    lab = Image.fromarray(labels.astype(np.int32)).resize(
        (out_cols, out_rows), Image.Resampling.NEAREST
    )
    return image, np.asarray(lab)


def _outline(
    rgb: np.ndarray, labels: np.ndarray, anterior_left: bool
) -> list[tuple[str, tuple[float, float]]]:
    """Draws each structure's outline in its SEG colour; returns vertebra name positions.

    Names go just in front of the vertebral body, where they cover neither the canal nor
    the discs: the vertebra label includes the posterior elements, so its centroid lies
    on the canal.
    """
    names: list[tuple[str, tuple[float, float]]] = []
    for kind in SEGMENT_KINDS:
        mask = labels == kind.label_value
        if not mask.any():
            continue
        edge = mask & ~ndimage.binary_erosion(mask, iterations=2)
        rgb[edge] = kind.rgb
        if kind.label_value in _VERTEBRA_NAMES:
            rows, cols = np.nonzero(mask)
            x = cols.min() - NAME_GAP if anterior_left else cols.max() + NAME_GAP
            x = float(np.clip(x, NAME_GAP, rgb.shape[1] - NAME_GAP))
            # a vertebra cut by the top of the image keeps its name clear of the banner
            y = max(float(rows.mean()), 12.0)
            names.append((_VERTEBRA_NAMES[kind.label_value], (x, y)))
    return names


def finding_of(
    findings: Sequence[Mapping], condition: str, side: str | None, level: str
) -> Mapping:
    key = rsna_key(condition, side, level)
    for finding in findings:
        if rsna_key(finding["condition"], finding.get("side"), finding["level"]) == key:
            return finding
    raise ValueError(f"findings have no entry for {key}")


def grade_of(
    findings: Sequence[Mapping], condition: str, side: str | None, level: str
) -> str | None:
    finding = finding_of(findings, condition, side, level)
    return finding.get("grade") if finding.get("assessable") else None


def needs_review(finding: Mapping) -> bool:
    review = finding.get("review")
    return bool(isinstance(review, Mapping) and review.get("required"))


def cell_lines(finding: Mapping) -> tuple[str, str]:
    """The two lines of a finding's cell: ``("Sev M", "L: N/M")`` is a severe grade decided by
    the measurement grader while the learned grader said normal or mild."""
    grade = finding.get("grade") if finding.get("assessable") else None
    first = CELL[grade][0]
    grader = str(finding.get("grader") or "")
    if grade is not None and grader:
        first += f" {GRADER_LETTER.get(grader, grader[:1].upper())}"
    disagreement = finding.get("disagreement")
    grades = disagreement.get("grades") if isinstance(disagreement, Mapping) else None
    others = [
        f"{GRADER_LETTER.get(str(g), str(g)[:1].upper())}: {CELL.get(v, CELL[None])[0]}"
        for g, v in (grades or {}).items()
        if g != grader
    ]
    if others:
        return first, " ".join(others)
    return first, "review" if needs_review(finding) else ""


def _table(draw: ImageDraw.ImageDraw, x0: int, y0: int, findings: Sequence[Mapping]) -> int:
    """Draws the stenosis grade table; returns the first free row below it."""
    head, body, small = _font(15), _font(17), _font(13)
    reviews = sum(needs_review(f) for f in findings)
    title = "Stenosis grades" + (f" ({reviews} need review)" if reviews else "")
    draw.text((x0, y0), title, fill=(255, 255, 255), font=_font(20))
    col_w, row_h, first = COL_W, ROW_H, 70
    y = y0 + 36
    for i, (title, _, _) in enumerate(COLUMNS):
        draw.text((x0 + first + i * col_w, y), title, fill=(220, 220, 220), font=head)
    y -= row_h - 26
    for level in LEVELS:
        y += row_h
        draw.text((x0, y + 12), level, fill=(255, 255, 255), font=body)
        for i, (_, condition, side) in enumerate(COLUMNS):
            finding = finding_of(findings, condition, side, level)
            colour = CELL[grade_of(findings, condition, side, level)][1]
            box = (x0 + first + i * col_w, y, x0 + first + (i + 1) * col_w - 6, y + row_h - 6)
            draw.rectangle(box, fill=colour)
            if needs_review(finding):
                draw.rectangle(box, outline=REVIEW_RGB, width=3)
                draw.text((box[2] - 12, box[1] + 3), "!", fill=REVIEW_RGB, font=body)
            line1, line2 = cell_lines(finding)
            draw.text((box[0] + 8, box[1] + 4), line1, fill=(255, 255, 255), font=body)
            if line2:
                draw.text((box[0] + 8, box[1] + 22), line2, fill=(255, 255, 255), font=small)
    y += row_h + 4
    for line in LEGEND:
        draw.text((x0, y), line, fill=(200, 200, 200), font=head)
        y += 20
    return y


def disc_cells(disc: Mapping) -> tuple[str, str, str]:
    """Pfirrmann, Modic and present findings of one disc as the disc table shows them:
    ``("4", "2", "Narr Bulg")``; a disc that could not be graded reads ``("n/a", "n/a",
    reason)``."""
    if not disc.get("assessable"):
        reason = str(disc.get("reason") or "not assessable")
        return "n/a", "n/a", reason if len(reason) <= 30 else reason[:27] + "..."
    found = " ".join(ABBREVIATION[key] for key in present_findings(disc))
    return str(disc["pfirrmann"]["grade"]), str(disc["modic"]["type"]), found or "none"


def disc_table_height(discs: Sequence[Mapping]) -> int:
    if not discs:
        return 0
    return 16 + 28 + 22 + len(discs) * DISC_ROW_H + 4 + 20 * len(DISC_LEGEND)


def _disc_table(draw: ImageDraw.ImageDraw, x0: int, y0: int, discs: Sequence[Mapping]) -> None:
    """Compact disc table: per level the Pfirrmann grade (coloured by degeneration), the
    Modic type and the abbreviated findings present."""
    if not discs:
        return
    head, body = _font(15), _font(17)
    white, grey = (255, 255, 255), (220, 220, 220)
    y = y0 + 16
    draw.text((x0, y), "Discs", fill=white, font=_font(20))
    y += 28
    columns = (0, 70, 130, 190)
    for x, title in zip(columns, ("Level", "Pf", "Mo", "Findings"), strict=True):
        draw.text((x0 + x, y), title, fill=grey, font=head)
    y += 22
    for disc in discs:
        pfirrmann, modic, found = disc_cells(disc)
        grade = (disc.get("pfirrmann") or {}).get("grade") if disc.get("assessable") else None
        colour = (
            PFIRRMANN_RGB.get(grade, CELL[None][1]) if isinstance(grade, int) else CELL[None][1]
        )
        box = (x0 + columns[1], y, x0 + columns[2] - 8, y + DISC_ROW_H - 3)
        draw.rectangle(box, fill=colour)
        ood = disc.get("ood")
        if isinstance(ood, Mapping) and ood.get("flagged"):
            draw.rectangle(box, outline=REVIEW_RGB, width=2)
        draw.text((x0, y + 2), str(disc.get("level")), fill=white, font=body)
        draw.text((box[0] + 8, y + 2), pfirrmann, fill=white, font=body)
        draw.text((x0 + columns[2], y + 2), modic, fill=white, font=body)
        draw.text((x0 + columns[3], y + 2), found, fill=white, font=body)
        y += DISC_ROW_H
    y += 4
    for line in DISC_LEGEND:
        draw.text((x0, y), line, fill=(200, 200, 200), font=head)
        y += 20


def _notice(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    """Draws :data:`NOTICE`; the default font has no em dash glyph, so the dash is a line."""
    before, after = NOTICE.split(" \u2014 ")
    x, y = xy
    white = (255, 255, 255)
    draw.text((x, y), before, fill=white, font=font)
    x += round(draw.textlength(before + " ", font=font))
    size = int(getattr(font, "size", 20))
    draw.line((x, y + size * 0.62, x + size, y + size * 0.62), fill=white, width=2)
    draw.text((x + round(draw.textlength(" ", font=font)) + size, y), after, fill=white, font=font)


def render(
    pixels: np.ndarray,
    labels: np.ndarray | None,
    pixel_spacing: Sequence[float],
    findings: Sequence[Mapping],
    anterior_left: bool = True,
    discs: Sequence[Mapping] = (),
) -> np.ndarray:
    """RGB key image (rows, cols, 3) uint8 of one slice with its labels and the grades.

    ``anterior_left``: the patient's front is on the image's left (columns run posteriorly).
    ``discs``: ``disc_findings`` entries, shown as a disc table below the grade table.
    """
    if pixels.ndim != 2:
        raise ValueError(f"key image needs one 2-D slice, got shape {pixels.shape}")
    if labels is not None and labels.shape != pixels.shape:
        raise ValueError(f"labels {labels.shape} do not match the slice {pixels.shape}")
    image, lab = _resize(window(pixels), labels, pixel_spacing)
    rgb = np.asarray(image.convert("RGB")).copy()
    names = _outline(rgb, lab, anterior_left) if lab is not None else []
    width = rgb.shape[1] + PANEL
    tables = 30 + 36 + len(LEVELS) * ROW_H + 20 * len(LEGEND) + 20 + disc_table_height(discs)
    height = BANNER + max(rgb.shape[0], tables)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    canvas.paste(Image.fromarray(rgb), (0, BANNER))
    draw = ImageDraw.Draw(canvas)
    for name, (x, y) in names:
        draw.text(
            (x, y + BANNER),
            name,
            fill=(255, 255, 255),
            font=_font(18),
            anchor="mm",
            stroke_width=2,
            stroke_fill=(0, 0, 0),
        )
    draw.rectangle((0, 0, width, BANNER - 1), fill=(150, 0, 0))
    _notice(draw, (10, 10), _font(22))
    y = _table(draw, rgb.shape[1] + 16, BANNER + 12, findings)
    _disc_table(draw, rgb.shape[1] + 16, y, discs)
    return np.asarray(canvas)

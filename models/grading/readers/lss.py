"""LSS MRI AISSLab foraminal stenosis dataset reader (sagittal T2, grades 0-3).

Layout: ``Foramina_Detection/Images/*.png`` with PASCAL VOC boxes in
``Foramina_Detection/Annotations/*.xml``, and ``Segmentation/Middle_Slice/*.png`` with masks in
``Segmentation/Masks/*.png``. Each VOC object carries a level (L1-L2 … L5-S1), a side (LFS/RFS)
and a grade 0-3. The public files spell the object name in more than one way ("L4-L5_LFS_2",
"L4L5 RFS 1", or separate ``level``/``side``/``grade`` children), so the parser accepts those
and rejects anything else by name rather than guessing a level.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lumbar_common.vocabulary import LEVELS, LSS_GRADES, Side

_LEVEL_RE = re.compile(r"L([1-5])\s*[-/_ ]?\s*(L[1-5]|S1)", re.IGNORECASE)
_SIDE_RE = re.compile(r"(?<![A-Z])(LFS|RFS|left|right)(?![A-Z])", re.IGNORECASE)
_GRADE_RE = re.compile(r"(?<![0-9A-Z])([0-3])(?![0-9])", re.IGNORECASE)
_GRADE_WORDS = {g.lower(): i for i, g in enumerate(LSS_GRADES)}


@dataclass(frozen=True)
class LssBox:
    level: str
    side: Side
    grade: int
    #: xmin, ymin, xmax, ymax in pixels
    box: tuple[float, float, float, float]


@dataclass
class LssImage:
    image: Path
    annotation: Path
    boxes: list[LssBox] = field(default_factory=list)

    def pixels(self) -> np.ndarray:
        return np.asarray(Image.open(self.image).convert("L"))


def _text(node: ET.Element, tag: str) -> str | None:
    child = node.find(tag)
    return child.text.strip() if child is not None and child.text else None


def parse_object_label(name: str, level: str | None = None, side: str | None = None,
                       grade: str | None = None) -> tuple[str, Side, int]:
    """(level, side, grade) from a VOC object's name and optional child fields."""
    text = " ".join(v for v in (name, level or "", side or "", grade or "") if v)
    m = _LEVEL_RE.search(text)
    if not m:
        raise ValueError(f"LSS object {name!r}: no level L1-L2 … L5-S1 found")
    lower = m.group(2).upper()
    lv = f"L{m.group(1)}-{lower}"
    if lv not in LEVELS:
        raise ValueError(f"LSS object {name!r}: {lv!r} is not a lumbar disc level")
    rest = text[: m.start()] + " " + text[m.end():]
    s = _SIDE_RE.search(rest)
    if not s:
        raise ValueError(f"LSS object {name!r}: no side (LFS/RFS/left/right) found")
    side_v: Side = "left" if s.group(1).lower() in ("lfs", "left") else "right"
    rest = rest[: s.start()] + " " + rest[s.end():]
    g = _GRADE_RE.search(rest)
    if g:
        grade_v = int(g.group(1))
    else:
        words = [w for w in re.split(r"[^a-z]+", rest.lower()) if w in _GRADE_WORDS]
        if not words:
            raise ValueError(f"LSS object {name!r}: no grade 0-3 found")
        grade_v = _GRADE_WORDS[words[0]]
    return lv, side_v, grade_v


def read_voc(xml_path: Path) -> list[LssBox]:
    root = ET.parse(xml_path).getroot()
    boxes: list[LssBox] = []
    for obj in root.iter("object"):
        name = _text(obj, "name") or ""
        lv, side, grade = parse_object_label(
            name, _text(obj, "level"), _text(obj, "side"), _text(obj, "grade")
        )
        bnd = obj.find("bndbox")
        if bnd is None:
            raise ValueError(f"{xml_path}: object {name!r} has no bndbox")
        coords = tuple(float(_text(bnd, k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        if any(np.isnan(coords)) or coords[2] <= coords[0] or coords[3] <= coords[1]:
            raise ValueError(f"{xml_path}: object {name!r} has an invalid box {coords}")
        boxes.append(LssBox(lv, side, grade, coords))  # type: ignore[arg-type]
    return boxes


def read_lss(root: str | Path) -> list[LssImage]:
    """Every annotated foraminal image (an XML without its PNG is an error)."""
    root = Path(root)
    ann_dir = root / "Foramina_Detection" / "Annotations"
    img_dir = root / "Foramina_Detection" / "Images"
    if not ann_dir.is_dir():
        raise ValueError(f"{root} is not an LSS folder: no Foramina_Detection/Annotations")
    out: list[LssImage] = []
    for xml_path in sorted(ann_dir.glob("*.xml")):
        filename = _text(ET.parse(xml_path).getroot(), "filename")
        image = img_dir / (filename or xml_path.with_suffix(".png").name)
        if not image.exists():
            image = img_dir / xml_path.with_suffix(".png").name
        if not image.exists():
            raise ValueError(f"{xml_path}: image {image.name} not found in {img_dir}")
        out.append(LssImage(image, xml_path, read_voc(xml_path)))
    return out


def read_lss_segmentation(root: str | Path) -> list[tuple[Path, Path]]:
    """(middle-slice image, mask) pairs of the segmentation part."""
    root = Path(root)
    img_dir, mask_dir = root / "Segmentation" / "Middle_Slice", root / "Segmentation" / "Masks"
    pairs = []
    for image in sorted(img_dir.glob("*.png")):
        mask = mask_dir / image.name
        if not mask.exists():
            raise ValueError(f"LSS: no mask {mask} for {image}")
        pairs.append((image, mask))
    return pairs

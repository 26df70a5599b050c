"""`lumbar-node analyze STUDY_DIR --out OUT_DIR`: run the pipeline on a folder of DICOM files.

Meant for a radiologist or developer checking one study by hand: it prints where each level
was found, its key measurements and grades, and leaves findings.json, overlay.png and the
DICOM result objects in OUT_DIR for a viewer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_dir", type=Path, help="folder searched recursively for DICOM files")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def study_files(study_dir: Path) -> list[Path]:
    """Every regular file under the folder except the synthetic generator's side files."""
    if not study_dir.is_dir():
        raise ValueError(f"study folder not found: {study_dir}")
    skip = {".json", ".npz", ".png", ".txt", ".md"}
    return sorted(p for p in study_dir.rglob("*") if p.is_file() and p.suffix.lower() not in skip)


def split_dicom(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Files that carry a DICOM header, and the rest (checked on the header only)."""
    import pydicom

    dicom, other = [], []
    for path in files:
        try:
            pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            dicom.append(path)
        except Exception:  # anything pydicom cannot parse is not a DICOM file for us
            other.append(path)
    return dicom, other


_SHORT = {"Normal/Mild": "normal", "Moderate": "moderate", "Severe": "SEVERE"}


def _measure(level: dict, name: str) -> str:
    for m in level.get("measurements", []):
        if m["name"] == name:
            if name == "listhesis":  # named by direction, never a negative slip
                return f"{'retro' if m['value'] < 0 else 'antero'} {abs(m['value']):.1f}"
            return f"{m['value']:.1f}"
    return "-"


_DISC_FLAGS = (("narrowing", "narrowed"), ("bulging", "bulge"), ("herniation", "herniation"),
               ("spondylolisthesis", "listhesis"), ("endplate_upper", "upper endplate"),
               ("endplate_lower", "lower endplate"))


def _disc_lines(discs: list[dict]) -> list[str]:
    """One line per disc: Pfirrmann, Modic and the findings called present."""
    if not discs:
        return []
    out = [f"{'disc':<6} {'Pfirrmann':>9} {'Modic':>5}  findings present (probability)"]
    for d in discs:
        if not d.get("assessable"):
            out.append(f"{d['level']:<6} {'n/a':>9} {'n/a':>5}  {d.get('reason') or ''}")
            continue
        present = [f"{label} {d[key]['probability']:.2f}" for key, label in _DISC_FLAGS
                   if (d.get(key) or {}).get("present")]
        out.append(f"{d['level']:<6} {d['pfirrmann']['grade']:>9} {d['modic']['type']:>5}  "
                   + (", ".join(present) or "none"))
    return out


def _review_lines(findings: dict) -> list[str]:
    """Every finding a radiologist must look at twice, grouped by the reason why."""
    by_reason: dict[str, list[str]] = {}
    for f in findings.get("findings", []):
        review = f.get("review") or {}
        if review.get("required"):
            side = f" {f['side']}" if f.get("side") else ""
            what = f"{f['level']}{side} {f['condition'].replace('_', ' ')}"
            by_reason.setdefault("; ".join(review.get("reasons", [])), []).append(what)
    out = []
    for reason, which in by_reason.items():
        names = ", ".join(which) if len(which) <= 3 else f"{len(which)} findings"
        out.append(f"  review {names}: {reason}")
    return out


def format_table(findings: dict) -> str:
    """Levels with measurements and grades, one line each."""
    lines = [f"status: {findings['status']}" + (f" ({findings['reason']})"
                                                 if findings.get("reason") else "")]
    if findings["status"] == "rejected":
        return "\n".join(lines)
    grades: dict[str, dict[str, str]] = {}
    for f in findings.get("findings", []):
        key = f["condition"].split("_")[0] + (f"_{f['side'][0].upper()}" if f.get("side") else "")
        grades.setdefault(f["level"], {})[key] = _SHORT.get(f["grade"], "n/a") if f.get(
            "assessable") else "n/a"
    header = (f"{'level':<6} {'canal AP':>8} {'disc a/p':>11} {'listhesis':>10}  "
              f"{'canal':<11} {'foramen L / R':<21} {'subarticular L / R':<21}")
    lines += [header, "-" * len(header)]
    for level in findings.get("levels", []):
        g = grades.get(level["level"], {})
        disc = "/".join(_measure(level, f"disc_height_{side}")
                        for side in ("anterior", "posterior"))
        lines.append(
            f"{level['level']:<6} {_measure(level, 'canal_ap_diameter'):>8} {disc:>11} "
            f"{_measure(level, 'listhesis'):>10}  {g.get('spinal', '-'):<11} "
            f"{g.get('neural_L', '-') + ' / ' + g.get('neural_R', '-'):<21} "
            f"{g.get('subarticular_L', '-') + ' / ' + g.get('subarticular_R', '-'):<21}")
    labelling = findings.get("level_labelling", {})
    if labelling.get("ambiguous"):
        lines.append("level labelling AMBIGUOUS: " + "; ".join(labelling.get("warnings", [])))
    lines += _disc_lines(findings.get("disc_findings") or [])
    flagged = _review_lines(findings)
    if flagged:
        count = sum(1 for f in findings.get("findings", [])
                    if (f.get("review") or {}).get("required"))
        lines.append(f"{count} finding(s) marked for review:")
        lines += flagged
    graders = sorted({f"{f['grader']} ({f.get('grader_kind')})" for f in findings.get(
        "findings", []) if f.get("grader")})
    if graders:
        lines.append("graded by: " + "; ".join(graders))
    if findings.get("notice"):
        lines.append(findings["notice"])
    timings = findings.get("timings_s", {})
    lines.append("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from models.pipeline import PipelineError, analyze_study

    try:
        files = study_files(args.study_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dicom, skipped = split_dicom(files)
    if not dicom:
        names = ", ".join(p.name for p in skipped[:5]) + (", …" if len(skipped) > 5 else "")
        print(f"error: no DICOM files found in {args.study_dir} ({len(skipped)} file(s) "
              f"skipped{': ' + names if names else ''})", file=sys.stderr)
        return 2
    try:
        findings = analyze_study(files, args.out, device=args.device, progress=not args.quiet)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(format_table(findings))
    print(f"results in {args.out}")
    return 0 if findings["status"] != "rejected" else 1

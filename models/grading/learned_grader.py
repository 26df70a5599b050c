"""Inference with the trained :class:`GraderNet`: crops in, calibrated probabilities out.

Weights and their model card live in the model registry (``models/weights/grader.pt`` /
``grader.json``, :mod:`models.registry`); the card's sha256 is checked on load so a
finding's model_version always names the exact weights that produced it. Temperatures
fitted at training time are stored in the
checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lumbar_common.vocabulary import CANAL, FORAMEN, LEVELS, SUBARTICULAR
from models.grading.calibration import apply_calibration
from models.grading.dataset import level_inputs
from models.grading.roi import canal_crop, foramen_crop, subarticular_crop
from models.study import StudyAnatomy

#: registry key of the learned grader (card ``grader.json``, weights ``grader.pt``)
MODEL_NAME = "grader"
WEIGHTS_NAME = "grader.pt"
#: output index -> (condition, side, temperature group)
OUTPUT_KEYS: tuple[tuple[str, str | None, str], ...] = (
    (CANAL, None, "canal"), (FORAMEN, "left", "foramen"), (FORAMEN, "right", "foramen"),
    (SUBARTICULAR, "left", "subarticular"), (SUBARTICULAR, "right", "subarticular"),
)


class LearnedUnavailable(RuntimeError):
    """The learned grader cannot run (no weights installed, checksum mismatch)."""


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; expected auto, cpu or cuda[:n]")
    return device


class LearnedGrader:
    def __init__(self, net: object, checkpoint: dict, card: dict, device: str) -> None:
        self.net = net
        self.calibration: dict[str, dict] = checkpoint.get("calibration", {})
        self.card = card
        self.device = device

    @property
    def card_summary(self) -> dict:
        return {k: self.card.get(k) for k in ("name", "version", "sha256", "summary", "metrics")}

    @classmethod
    def load(cls, device: str = "auto", weights_dir: Path | None = None) -> LearnedGrader:
        import torch

        from models import registry
        from models.grading.learned import GraderNet

        try:
            card = registry.load_card(MODEL_NAME, weights_dir)
            weights = registry.verify(MODEL_NAME, weights_dir)
        except (KeyError, FileNotFoundError, ValueError, registry.WeightsMismatchError) as exc:
            raise LearnedUnavailable(str(exc).strip("'\"")) from exc
        dev = resolve_device(device)
        ckpt = torch.load(weights, map_location=dev, weights_only=True)
        net = GraderNet(**ckpt["config"])
        net.load_state_dict(ckpt["state_dict"])
        net.to(dev).eval()
        return cls(net, ckpt, card, dev)

    def _calibrated(self, logits: np.ndarray, group: str) -> np.ndarray:
        c = self.calibration.get(group, {})
        return apply_calibration(logits, c.get("temperature", 1.0), c.get("bias"))

    def logits(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        def t(name: str) -> torch.Tensor:
            return torch.as_tensor(batch[name]).float().to(self.device)

        with torch.inference_mode():
            out, lss = self.net(  # type: ignore[operator]
                t("canal"), t("for_l"), t("for_r"), t("ax_l"), t("ax_r"),
                torch.as_tensor(batch["presence"]).float().to(self.device),
                torch.as_tensor(batch["level"]).long().to(self.device),
                torch.as_tensor(batch["feats"]).float().to(self.device))
        return out.cpu().numpy(), lss.cpu().numpy()

    def predict(self, anatomy: StudyAnatomy) -> dict[str, dict]:
        """level -> (condition, side) -> {probabilities, roi, lss_probabilities} or {reason}."""
        rows: dict[str, list[np.ndarray]] = {}
        names: list[str] = []
        result: dict[str, dict] = {}
        for level in anatomy.levels:
            if level.level not in LEVELS:
                continue
            try:
                x = level_inputs(anatomy, level)
            except ValueError as exc:
                result[level.level] = {k[:2]: {"reason": str(exc)} for k in OUTPUT_KEYS}
                continue
            x["level"] = np.int64(LEVELS.index(level.level))
            for k, v in x.items():
                rows.setdefault(k, []).append(np.asarray(v))
            names.append(level.level)
        if not names:
            return result
        logits, lss_logits = self.logits({k: np.stack(v) for k, v in rows.items()})
        by_level = {lv.level: lv for lv in anatomy.levels}
        for i, name in enumerate(names):
            level = by_level[name]
            t1, ax = rows["presence"][i]
            out: dict = {}
            for j, (condition, side, group) in enumerate(OUTPUT_KEYS):
                if condition == FORAMEN and not t1:
                    out[(condition, side)] = {"reason": "no sagittal T1 covering the foramen"}
                    continue
                if condition == SUBARTICULAR and not ax:
                    out[(condition, side)] = {
                        "reason": "no axial T2 slice through the disc level"}
                    continue
                p = self._calibrated(logits[i, j], group)
                if condition == CANAL:
                    crop = canal_crop(anatomy, level)
                elif condition == FORAMEN:
                    crop = foramen_crop(anatomy, level, side)  # type: ignore[arg-type]
                else:
                    crop = subarticular_crop(anatomy, level, side)  # type: ignore[arg-type]
                assert crop is not None
                entry = {"probabilities": [round(float(v), 4) for v in p],
                         "roi": {"series_instance_uid": crop.series_instance_uid,
                                 "slice": crop.slice_index,
                                 "corners_lps": np.round(crop.corners_lps, 2).tolist()}}
                if condition == FORAMEN and "lss" in self.calibration:
                    q = self._calibrated(lss_logits[i, 0 if side == "left" else 1], "lss")
                    entry["lss_probabilities"] = [round(float(v), 4) for v in q]
                out[(condition, side)] = entry
            result[name] = out
        return result

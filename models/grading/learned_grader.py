"""Inference with the trained :class:`GraderNet`: crops in, calibrated probabilities out.

Weights and their model card live in the model registry (``models/weights/grader.pt`` /
``grader.json``, :mod:`models.registry`); the card's sha256 is checked on load so a
finding's model_version always names the exact weights that produced it.

The checkpoint also carries what was fitted after training on held-out synthetic studies:
one temperature per condition group (probabilities only; the grade is always the network's
own argmax — class-prior offsets of older checkpoints are ignored, see
:mod:`models.grading.calibration`) and the statistics of the out-of-distribution gate
(:mod:`models.grading.grader_ood`). Every prediction carries the gate's verdict (``ood``),
because a network trained on synthetic studies answers confidently on real MRI it has never
seen; the caller decides what a flagged prediction may still be used for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lumbar_common.vocabulary import CANAL, FORAMEN, LEVELS, SUBARTICULAR
from models.grading.calibration import calibrated
from models.grading.dataset import level_inputs
from models.grading.grader_ood import OodGate
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
#: output index -> crop (encoder input) whose embedding the gate scores
OUTPUT_CROPS: tuple[str, ...] = ("canal", "for_l", "for_r", "ax_l", "ax_r")


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
        self.gate = OodGate.from_checkpoint(checkpoint)
        self.card = card
        self.device = device

    @property
    def card_summary(self) -> dict:
        return {k: self.card.get(k) for k in (
            "name", "version", "sha256", "summary", "training_data_kind", "validated_on_real",
            "metrics")}

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
        try:
            return cls(net, ckpt, card, dev)
        except ValueError as exc:  # no gate statistics: never run ungated
            raise LearnedUnavailable(f"model {MODEL_NAME!r}: {exc}") from exc

    def _calibrated(self, logits: np.ndarray, group: str) -> np.ndarray:
        """Temperature only: the grade stays the network's argmax (biases are ignored)."""
        return calibrated(logits, self.calibration.get(group, {}).get("temperature", 1.0))

    def logits(self, batch: dict[str, np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Logits [n,5,3], LSS logits [n,2,4] and each crop's encoder embedding."""
        import torch

        def t(name: str) -> torch.Tensor:
            return torch.as_tensor(batch[name]).float().to(self.device)

        with torch.inference_mode():
            out, lss, emb = self.net.forward_with_embeddings(  # type: ignore[attr-defined]
                t("canal"), t("for_l"), t("for_r"), t("ax_l"), t("ax_r"),
                torch.as_tensor(batch["presence"]).float().to(self.device),
                torch.as_tensor(batch["level"]).long().to(self.device),
                torch.as_tensor(batch["feats"]).float().to(self.device))
        return (out.cpu().numpy(), lss.cpu().numpy(),
                {k: v.cpu().numpy() for k, v in emb.items()})

    def predict(self, anatomy: StudyAnatomy) -> dict[str, dict]:
        """level -> (condition, side) -> {probabilities, roi, lss_probabilities, ood} or
        {reason, ood: None}.

        ``ood`` is the gate's verdict on the crop behind that output: {flagged, score,
        threshold, reason}; it is None where no crop was graded.
        """
        rows: dict[str, list[np.ndarray]] = {}
        names: list[str] = []
        result: dict[str, dict] = {}
        for level in anatomy.levels:
            if level.level not in LEVELS:
                continue
            try:
                x = level_inputs(anatomy, level)
            except ValueError as exc:
                result[level.level] = {k[:2]: {"reason": str(exc), "ood": None}
                                       for k in OUTPUT_KEYS}
                continue
            x["level"] = np.int64(LEVELS.index(level.level))
            for k, v in x.items():
                rows.setdefault(k, []).append(np.asarray(v))
            names.append(level.level)
        if not names:
            return result
        logits, lss_logits, emb = self.logits({k: np.stack(v) for k, v in rows.items()})
        scores = {crop: self.gate.scores(group, emb[crop])
                  for (_, _, group), crop in zip(OUTPUT_KEYS, OUTPUT_CROPS, strict=True)}
        by_level = {lv.level: lv for lv in anatomy.levels}
        for i, name in enumerate(names):
            level = by_level[name]
            t1, ax = rows["presence"][i]
            out: dict = {}
            for j, (condition, side, group) in enumerate(OUTPUT_KEYS):
                if condition == FORAMEN and not t1:
                    out[(condition, side)] = {"reason": "no sagittal T1 covering the foramen",
                                              "ood": None}
                    continue
                if condition == SUBARTICULAR and not ax:
                    out[(condition, side)] = {
                        "reason": "no axial T2 slice through the disc level", "ood": None}
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
                                 "corners_lps": np.round(crop.corners_lps, 2).tolist()},
                         "ood": self.gate.verdict(group, float(scores[OUTPUT_CROPS[j]][i]))}
                if condition == FORAMEN and "lss" in self.calibration:
                    q = self._calibrated(lss_logits[i, 0 if side == "left" else 1], "lss")
                    entry["lss_probabilities"] = [round(float(v), 4) for v in q]
                out[(condition, side)] = entry
            result[name] = out
        return result

"""The shipped disc grader: per-disc findings for every level the node labelled.

``DiscGrader.load(device)`` checks the weights' sha256 against ``disc.json`` and
``predict(volume, labelling)`` grades every disc of ``labelling.levels`` on the sagittal T2
(optionally with the sagittal T1 and its own labelling: the series are not co-registered,
so each is segmented and labelled on its own and discs are matched by level name). One disc
is one entry::

    {"level": "L4-L5",
     "pfirrmann": {"grade": 1-5, "probabilities": [p1..p5]},
     "modic": {"type": 0-3, "probabilities": [p0..p3]},
     "narrowing" | "herniation" | "bulging" | "spondylolisthesis" | "endplate_upper" |
     "endplate_lower": {"present": bool, "probability": p},
     "assessable": bool, "reason": str | None, "model_version": str,
     "ood": {"flagged": bool, "score": float, "threshold": float, "reason": str | None}}

A disc whose crop lies mostly outside the image is not assessable: its grades, types,
``present`` and probabilities are None and ``reason`` says why. An out-of-distribution disc
keeps its outputs and carries the flag; the caller decides whether to show them.

The logits are averaged over the exact crop and ``calibration.tta_copies`` jittered ones
(drawn with a fixed seed, so a rerun gives identical outputs), as in the cross-validation
the temperatures were fitted on; the out-of-distribution score reads the exact crop.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.discs.dataset import (
    BINARY,
    CROP_COLS,
    CROP_ROWS,
    ImageDiscs,
    assessable,
    image_discs,
    level_code,
)
from models.discs.ood import EmbeddingStats, verdict
from models.discs.signal import N_SIGNAL
from models.levels import LevelLabelling, semantic_from_labels
from models.study import Volume

if TYPE_CHECKING:
    import torch

MODEL_NAME = "disc"
#: seed of the jittered crops averaged at test time (their number is in the card)
TTA_SEED = 0


def _discs(volume: Volume, labelling: LevelLabelling, semantic: np.ndarray | None,
           measurements: dict[str, list[dict]] | None, what: str,
           copies: int) -> ImageDiscs:
    if not isinstance(volume, Volume):
        raise ValueError(f"{what} must be a models.study.Volume, got {type(volume).__name__}")
    if not isinstance(labelling, LevelLabelling):
        raise ValueError(f"labelling of the {what} must be a LevelLabelling, "
                         f"got {type(labelling).__name__}")
    if labelling.labels.shape != volume.array.shape:
        raise ValueError(f"labelling of the {what} has shape {labelling.labels.shape}, "
                         f"the volume {volume.array.shape}")
    if semantic is None:
        semantic = semantic_from_labels(labelling.labels)
    # the jittered copies are drawn the same way for every call: identical outputs on reruns
    return image_discs(volume, semantic, labelling, copies, np.random.default_rng(TTA_SEED),
                       measurements=measurements)


class DiscGrader:
    """The registered disc model with its temperatures and out-of-distribution statistics."""

    def __init__(self, net: torch.nn.Module, card: dict[str, Any], stats: EmbeddingStats,
                 device: torch.device) -> None:
        self.net = net
        self.card = card
        self.stats = stats
        self.device = device
        self.temperatures: dict[str, float] = card["calibration"]["temperatures"]
        self.threshold = float(card["ood"]["threshold"])
        self.model_version = f"{card['name']}@{card['version']}"
        self.tta_copies = int(card["calibration"].get("tta_copies", 0))

    @classmethod
    def load(cls, device: str = "auto", name: str = MODEL_NAME,
             root: Path | None = None) -> DiscGrader:
        """Load after checking the weights' sha256 against the model card."""
        import torch

        from models.discs.net import DiscNet
        from models.registry import load_card, verify
        from models.segmentation.infer import resolve_device

        card = load_card(name, root=root)
        weights = verify(name, root=root)
        torch_device = resolve_device(device)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        ood = {k: state.pop(k).float().numpy() for k in list(state) if k.startswith("ood_")}
        net = DiscNet(**card["architecture"]["args"])
        net.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in state.items()})
        return cls(net.to(torch_device).eval(), card, EmbeddingStats.from_arrays(ood),
                   torch_device)

    def predict(self, volume: Volume, labelling: LevelLabelling, *,
                t1_volume: Volume | None = None, t1_labelling: LevelLabelling | None = None,
                semantic: np.ndarray | None = None,
                measurements: dict[str, list[dict]] | None = None) -> list[dict]:
        """One entry per disc of ``labelling.levels`` (see the module docstring).

        ``volume`` is the sagittal T2 (one or more slices: the slice nearest each disc
        centre is read). ``semantic`` (the segmentation) and ``measurements`` (as from
        :func:`models.measurements.measure_levels`) are recomputed from the labelling when
        not given.
        """
        import torch

        from models.discs.fit import probabilities

        if (t1_volume is None) != (t1_labelling is None):
            raise ValueError("t1_volume and t1_labelling must be given together, got "
                             f"t1_volume={type(t1_volume).__name__}, "
                             f"t1_labelling={type(t1_labelling).__name__}")
        k = self.tta_copies
        t2 = _discs(volume, labelling, semantic, measurements, "volume", k)
        t1 = (_discs(t1_volume, t1_labelling, None, None, "t1_volume", k)
              if t1_volume is not None and t1_labelling is not None else None)
        levels = [g.level for g in labelling.levels]
        if not levels:
            return []
        zeros = np.zeros((1 + k, CROP_ROWS, CROP_COLS), np.float32)
        crops, presence, feats, codes = [], [], [], []
        for level in levels:
            t1_crop = t1.crops.get(level) if t1 is not None else None
            crops.append(np.stack([t2.crops[level].astype(np.float32),
                                   zeros if t1_crop is None else t1_crop.astype(np.float32)],
                                  axis=1))  # [1 + k, 2, H, W]
            presence.append([1.0, 0.0 if t1_crop is None else 1.0])
            parts = [*t2.features[level]]
            if getattr(self.net, "use_signal", False):
                parts += _signal(t2, t1, level)
            feats.append(np.concatenate(parts))
            codes.append(level_code(level))
        x = torch.as_tensor(np.asarray(crops, np.float32), device=self.device)
        args = [torch.as_tensor(np.asarray(a), device=self.device) for a in (
            np.asarray(presence, np.float32), np.asarray(feats, np.float32),
            np.asarray(codes, np.int64))]
        with torch.inference_mode():
            # the exact crop gives the embedding; logits average over exact + jittered crops
            logits, emb = self.net.forward_with_embedding(x[:, 0], *args)
            for c in range(1, k + 1):
                logits = logits + self.net(x[:, c], *args)
            logits = logits / (k + 1)
        probs = probabilities(logits.float().cpu().numpy(), self.temperatures)
        scores = self.stats.score(emb.float().cpu().numpy())
        return [self._entry(level, i, probs, float(scores[i]), t2.outside[level])
                for i, level in enumerate(levels)]

    def _entry(self, level: str, i: int, probs: dict[str, np.ndarray], score: float,
               outside: float) -> dict:
        ok, reason = assessable(outside)
        pf = [round(float(p), 4) for p in probs["pfirrmann"][i]]
        mo = [round(float(p), 4) for p in probs["modic"][i]]
        entry: dict[str, Any] = {
            "level": level,
            "pfirrmann": {"grade": int(np.argmax(pf)) + 1 if ok else None,
                          "probabilities": pf if ok else None},
            "modic": {"type": int(np.argmax(mo)) if ok else None,
                      "probabilities": mo if ok else None},
        }
        for name in BINARY:
            p = float(probs[name][i])
            entry[name] = {"present": bool(p >= 0.5) if ok else None,
                           "probability": round(p, 4) if ok else None}
        entry.update({"assessable": ok, "reason": reason, "model_version": self.model_version,
                      "ood": verdict(score, self.threshold)})
        return entry

    def predict_images(self, segmenter: object, t2: Volume,
                       t1: Volume | None = None) -> list[dict]:
        """Segment and label the T2 (and the T1 on its own), then :meth:`predict`."""
        from models.levels import label_levels

        semantic = segmenter.segment(t2)  # type: ignore[attr-defined]
        labelling = label_levels(t2, semantic)
        t1_labelling = None
        if t1 is not None:
            t1_labelling = label_levels(t1, segmenter.segment(t1))  # type: ignore[attr-defined]
        return self.predict(t2, labelling, t1_volume=t1, t1_labelling=t1_labelling,
                            semantic=semantic)


def _signal(t2: ImageDiscs, t1: ImageDiscs | None, level: str) -> list[np.ndarray]:
    """T2 then T1 signal ratios, then their masks (zeros where the T1 or its disc is
    missing), the layout the network was trained on."""
    none = (np.zeros(N_SIGNAL, np.float32), np.zeros(N_SIGNAL, np.float32))
    s2 = t2.signal.get(level, none)
    s1 = t1.signal.get(level, none) if t1 is not None and level in t1.crops else none
    return [s2[0], s1[0], s2[1], s1[1]]


def withdraw_out_of_distribution(entry: dict) -> dict:
    """The entry as the node reports it: an out-of-distribution disc's outputs withdrawn.

    A learned output on input unlike its training data is not shown as a finding; the
    reason says why, and the gate's verdict stays with the entry.
    """
    ood = entry.get("ood") or {}
    if not ood.get("flagged") or not entry.get("assessable"):
        return entry
    out = dict(entry)
    for key, value in entry.items():
        if isinstance(value, dict) and key != "ood":
            out[key] = {k: None for k in value}
    out["assessable"] = False
    out["reason"] = f"out of distribution: {ood.get('reason') or 'disc unlike the training data'}"
    return out

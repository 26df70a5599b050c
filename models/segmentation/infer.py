"""Inference: registered weights -> semantic labels in the source grid of a sagittal volume.

Each slice is turned to the canonical orientation, normalised by its own percentiles and
resampled to the training pixel size; the network's class scores are resampled back to the
source grid (bilinear on scores, then argmax - smoother than nearest-neighbour on labels and
exact in shape), and the orientation is undone, so the result lines up voxel for voxel with
``volume.array`` and its affine. The softmax of those resampled scores gives each voxel's
confidence (its largest class probability), which the out-of-distribution gate reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.segmentation.net import SIZE_MULTIPLE, build_network
from models.segmentation.preprocess import (
    Orientation,
    normalise_intensity,
    resample_image,
    resampled_shape,
)

if TYPE_CHECKING:
    import torch

    from models.study import Volume

#: Registry name of the segmentation model.
MODEL_NAME = "segmentation"


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; anything else must name a usable device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def _pad_to_multiple(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    rows, cols = image.shape
    pad_r = (-rows) % SIZE_MULTIPLE
    pad_c = (-cols) % SIZE_MULTIPLE
    return np.pad(image, ((0, pad_r), (0, pad_c))), (rows, cols)


def predict_slices(net: torch.nn.Module, images: np.ndarray, spacing: tuple[float, float],
                   device: torch.device, batch_size: int = 8) -> np.ndarray:
    """Canonical slices [n,row,col] of ``spacing`` mm -> uint8 classes in the same grid."""
    return predict_slices_with_confidence(net, images, spacing, device, batch_size)[0]


def predict_slices_with_confidence(
    net: torch.nn.Module, images: np.ndarray, spacing: tuple[float, float],
    device: torch.device, batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Canonical slices -> (uint8 classes, float32 max softmax probability), same grid.

    The confidence is the softmax of the class scores after their resampling to the source
    grid, so it describes exactly the decision behind each returned label.
    """
    import torch
    import torch.nn.functional as F

    images = np.asarray(images)
    if images.ndim != 3 or min(images.shape) < 1:
        raise ValueError(f"expected non-empty [slice,row,col] slices, got shape {images.shape}")
    source_shape = images.shape[1:]
    shape = resampled_shape(source_shape, spacing)
    prepared = [_pad_to_multiple(resample_image(normalise_intensity(im), shape))[0]
                for im in images]
    out = np.zeros(images.shape, dtype=np.uint8)
    confidence = np.zeros(images.shape, dtype=np.float32)
    net.eval()
    with torch.inference_mode():
        for start in range(0, len(prepared), batch_size):
            batch = torch.from_numpy(np.stack(prepared[start:start + batch_size])[:, None])
            logits = net(batch.to(device)).float()[:, :, : shape[0], : shape[1]]
            logits = F.interpolate(logits, size=source_shape, mode="bilinear",
                                   align_corners=False)
            best, labels = torch.softmax(logits, dim=1).max(dim=1)
            out[start:start + len(batch)] = labels.to(torch.uint8).cpu().numpy()
            confidence[start:start + len(batch)] = best.cpu().numpy()
    return out, confidence


def load_network(weights: Path, architecture: dict[str, Any],
                 device: torch.device) -> torch.nn.Module:
    """Network with the stored weights (kept as float16 on disk, run in float32)."""
    import torch

    net = build_network(architecture)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.to(device).eval()


class Segmenter:
    """The registered segmentation model, ready to label sagittal volumes."""

    def __init__(self, net: torch.nn.Module, card: dict[str, Any], device: torch.device):
        self.net = net
        self.card = card
        self.device = device

    @classmethod
    def load(cls, device: str = "auto", name: str = MODEL_NAME,
             root: Path | None = None) -> Segmenter:
        """Load the registered weights after checking their sha256 against the model card."""
        from models.registry import load_card, verify

        card = load_card(name, root=root)
        weights = verify(name, root=root)
        torch_device = resolve_device(device)
        return cls(load_network(weights, card["architecture"], torch_device), card, torch_device)

    def segment(self, volume: Volume) -> np.ndarray:
        """uint8 [slice,row,col] in ``volume``'s grid: 0 bg, 1 vertebra, 2 disc, 3 canal."""
        return self.segment_with_confidence(volume)[0]

    def segment_with_confidence(self, volume: Volume) -> tuple[np.ndarray, np.ndarray]:
        """Labels as :meth:`segment` and the float32 max softmax probability of each voxel.

        Both are in ``volume``'s grid; the confidence feeds the out-of-distribution gate
        (``models.segmentation.ood``).
        """
        orientation = Orientation.from_affine(volume.affine)
        canonical = orientation.to_canonical(np.asarray(volume.array, dtype=np.float32))
        labels, confidence = predict_slices_with_confidence(
            self.net, canonical, orientation.spacing, self.device)
        labels = orientation.from_canonical(labels)
        confidence = orientation.from_canonical(confidence)
        if labels.shape != volume.array.shape:  # pragma: no cover - guarded by construction
            raise RuntimeError(f"segmentation {labels.shape} != volume {volume.array.shape}")
        return labels, confidence

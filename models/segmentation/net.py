"""The segmentation network, built from a plain dict so the model card can rebuild it.

A 2-D MONAI ``BasicUNet`` applied slice by slice. Why 2-D: clinical sagittal slices are
3-4 mm apart while the SPIDER training slices are 0.9 mm apart, so any through-plane
(2.5-D/3-D) context would look different in training and in use; the in-plane anatomy
(vertebral bodies, discs, canal) carries the information. Batch norm rather than instance
norm so a whole slice at inference is normalised exactly like the training crops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Everything needed to rebuild the network; written verbatim into the model card.
DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "class": "monai.networks.nets.BasicUNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 4,
    "features": [16, 32, 64, 128, 256, 16],
    "norm": "batch",
    "dropout": 0.0,
}
#: Input sizes must be divisible by this (four 2x poolings).
SIZE_MULTIPLE = 16


def build_network(architecture: dict[str, Any] | None = None) -> torch.nn.Module:
    """Instantiate the network described by a model card's ``architecture``."""
    from monai.networks.nets import BasicUNet

    arch = dict(DEFAULT_ARCHITECTURE if architecture is None else architecture)
    if arch.get("class") != DEFAULT_ARCHITECTURE["class"]:
        raise ValueError(f"unsupported segmentation architecture class {arch.get('class')!r}")
    features = arch.get("features")
    if not isinstance(features, list | tuple) or len(features) != 6:
        raise ValueError(f"BasicUNet needs 6 feature sizes, got {features!r}")
    return BasicUNet(
        spatial_dims=int(arch["spatial_dims"]),
        in_channels=int(arch["in_channels"]),
        out_channels=int(arch["out_channels"]),
        features=tuple(int(f) for f in features),
        norm=arch.get("norm", "batch"),
        dropout=float(arch.get("dropout", 0.0)),
    )

"""Learned grader: one small 2.5-D ResNet per input stack, one joint head per level.

The layout follows a strong RSNA 2024 approach (separate encoders for the sagittal T2 canal
crop, the sagittal T1 foraminal crops and the axial T2 crops, concatenated into one head)
scaled down to train on a CPU: the crops are tiny (32 px), the encoders narrow, and each
stack's few slices enter as channels of a 2-D MONAI ResNet (2.5-D) — on a CPU that is about
six times faster than the same network in 3-D, for slabs only 3-5 slices deep.
Left and right share an encoder: the crops are built so both sides look alike (lateral
slab order, mirrored axials), which doubles the data each encoder sees.

The joint head also receives the explainable grader's measurements (canal AP diameter,
foraminal fat fractions, recess patencies) as scalars: with the few thousand levels a CPU
can generate, a measured number is a strong prior the crops then refine.

Missing series are part of training (whole stacks are dropped at random and a presence flag
goes to the head), so the canal grade does not fall apart when, say, the axial is absent.
Foraminal outputs without a sagittal T1 and subarticular outputs without an axial T2 are
never reported: the head only learned them from those stacks.
"""

from __future__ import annotations

import torch
from torch import nn

#: order of the 3-grade outputs
OUTPUTS: tuple[str, ...] = ("canal", "foramen_left", "foramen_right", "sub_left", "sub_right")
#: LSS 4-grade outputs (foramina)
LSS_OUTPUTS: tuple[str, ...] = ("lss_left", "lss_right")
#: presence flags: sagittal T1, axial T2 (sagittal T2/STIR is always there)
N_PRESENCE = 2
#: scalar measurements (models.grading.dataset.N_FEATURES)
N_FEATURES = 6
N_LEVELS = 5


def _encoder(width: int, slices: int) -> nn.Module:
    from monai.networks.nets.resnet import ResNet

    return ResNet(block="basic", layers=[1, 1, 1, 1],
                  block_inplanes=[width, 2 * width, 4 * width, 8 * width], spatial_dims=2,
                  n_input_channels=slices, conv1_t_size=7, conv1_t_stride=2,
                  feed_forward=False, shortcut_type="A")


def encode(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoder's output and its multi-scale embedding: every stage's channel means and
    (where a stage still has spatial extent) channel standard deviations.

    Runs the MONAI ResNet's own modules in its own order, so the output equals
    ``encoder(x)``. The early stages carry texture and contrast that the last stage averages
    away (noise, another sequence), which the out-of-distribution gate needs — Lee et al.
    2018 use every stage for the same reason; on pure-noise crops the last stage alone let
    over half the foraminal and most subarticular crops through.
    """
    x = encoder.act(encoder.bn1(encoder.conv1(x)))  # type: ignore[operator]
    if not encoder.no_max_pool:
        x = encoder.maxpool(x)  # type: ignore[operator]
    pooled = []
    for layer in (encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4):
        x = layer(x)  # type: ignore[operator]
        pooled.append(x.mean(dim=(2, 3)))
        if x.shape[2] * x.shape[3] > 1:
            pooled.append(x.std(dim=(2, 3)))
    out = encoder.avgpool(x).flatten(1)  # type: ignore[operator]
    return out, torch.cat(pooled, dim=1)


class GraderNet(nn.Module):
    """Inputs per level: canal [B,3,H,W], foramina [B,5,H,W] x2, axials [B,3,H,W] x2."""

    def __init__(self, width: int = 8, hidden: int = 96, dropout: float = 0.2,
                 use_features: bool = True) -> None:
        super().__init__()
        self.width = width
        self.use_features = use_features
        feat = 8 * width
        self.canal = _encoder(width, 3)
        self.foramen = _encoder(width, 5)
        self.axial = _encoder(width, 3)
        joint = 5 * feat + N_PRESENCE + N_LEVELS + (N_FEATURES if use_features else 0)
        self.head = nn.Sequential(
            nn.Linear(joint, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, 3 * len(OUTPUTS) + 4 * len(LSS_OUTPUTS)),
        )

    def forward(self, canal: torch.Tensor, for_l: torch.Tensor, for_r: torch.Tensor,
                ax_l: torch.Tensor, ax_r: torch.Tensor, presence: torch.Tensor,
                level: torch.Tensor, feats: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (logits [B,5,3], lss logits [B,2,4])."""
        logits, lss, _ = self.forward_with_embeddings(canal, for_l, for_r, ax_l, ax_r,
                                                      presence, level, feats)
        return logits, lss

    def forward_with_embeddings(self, canal: torch.Tensor, for_l: torch.Tensor,
                                for_r: torch.Tensor, ax_l: torch.Tensor, ax_r: torch.Tensor,
                                presence: torch.Tensor, level: torch.Tensor,
                                feats: torch.Tensor | None = None
                                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Logits plus each crop's multi-scale embedding (:func:`encode`), before presence
        masking.

        The embeddings are what the out-of-distribution gate
        (:mod:`models.grading.grader_ood`) measures: one forward pass serves both.
        """
        t1 = presence[:, 0:1]
        ax = presence[:, 1:2]
        crops = {"canal": (self.canal, canal), "for_l": (self.foramen, for_l),
                 "for_r": (self.foramen, for_r), "ax_l": (self.axial, ax_l),
                 "ax_r": (self.axial, ax_r)}
        enc = {k: encode(e, x) for k, (e, x) in crops.items()}
        feat = {k: v[0] for k, v in enc.items()}
        emb = {k: v[1] for k, v in enc.items()}
        parts = [
            feat["canal"], feat["for_l"] * t1, feat["for_r"] * t1, feat["ax_l"] * ax,
            feat["ax_r"] * ax, presence, nn.functional.one_hot(level, N_LEVELS).float(),
        ]
        if self.use_features:
            if feats is None:
                raise ValueError("this network was built with use_features: pass feats")
            mask = torch.cat([torch.ones_like(t1), torch.ones_like(t1), t1, t1, ax, ax], dim=1)
            parts.append(feats * mask)
        f = torch.cat(parts, dim=1)
        out = self.head(f)
        n3 = 3 * len(OUTPUTS)
        return (out[:, :n3].reshape(-1, len(OUTPUTS), 3), out[:, n3:].reshape(-1, 2, 4), emb)

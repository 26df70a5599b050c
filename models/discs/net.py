"""Disc classifier: one small 2-D MONAI ResNet over the T2 and T1 crops, multi-task heads.

The T2 and T1 crops enter as two channels: both are cut on the same disc-aligned millimetre
grid, so the disc sits in the same place in each even though the series are not
co-registered. A missing T1 (or T2) is a zero channel plus a presence flag, and whole
channels are dropped at random in training so the head has seen that case. The head also
receives the node's measured disc heights (normalised, with a present mask) and the level:
narrowing and slip are largely a matter of measured height and offset, which a few hundred
images cannot teach a network from pixels alone.

Pfirrmann (5 grades) and Modic (4 types) are softmax heads; the six binary findings are one
logit each. One forward pass also returns the multi-scale embedding the out-of-distribution
check measures (:mod:`models.discs.ood`).
"""

from __future__ import annotations

import torch
from torch import nn

from models.discs.dataset import (
    BINARY,
    HEADS,
    N_FEATURES,
    N_LEVEL_CODES,
    N_LOGITS,
    N_MODIC,
    N_PFIRRMANN,
)
from models.discs.signal import N_SIGNAL

__all__ = ["BINARY", "HEADS", "N_LOGITS", "DiscNet", "split_logits"]


def split_logits(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """[B, N_LOGITS] -> pfirrmann [B,5], modic [B,4], one [B] per binary finding."""
    if logits.ndim != 2 or logits.shape[1] != N_LOGITS:
        raise ValueError(f"expected logits [B, {N_LOGITS}], got {tuple(logits.shape)}")
    out = {"pfirrmann": logits[:, :N_PFIRRMANN],
           "modic": logits[:, N_PFIRRMANN:N_PFIRRMANN + N_MODIC]}
    for i, name in enumerate(BINARY):
        out[name] = logits[:, N_PFIRRMANN + N_MODIC + i]
    return out


class DiscNet(nn.Module):
    """Inputs: crops [B,2,H,W] (T2, T1), presence [B,2], feats + mask [B,2F] (+ T2 and T1
    signal ratios, then their masks [B,4S] with ``use_signal``), level [B]."""

    def __init__(self, width: int = 16, hidden: int = 64, dropout: float = 0.3,
                 use_features: bool = True, use_signal: bool = False) -> None:
        super().__init__()
        from monai.networks.nets.resnet import ResNet

        self.use_features = use_features
        #: ``feats`` then also carries the T2 and T1 signal ratios and their masks
        self.use_signal = use_signal
        self.encoder = ResNet(block="basic", layers=[1, 1, 1, 1],
                              block_inplanes=[width, 2 * width, 4 * width, 8 * width],
                              spatial_dims=2, n_input_channels=2, conv1_t_size=5,
                              conv1_t_stride=1, feed_forward=False, shortcut_type="A")
        joint = (8 * width + 2 + N_LEVEL_CODES + (2 * N_FEATURES if use_features else 0)
                 + (4 * N_SIGNAL if use_signal else 0))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(joint, hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout),
                                  nn.Linear(hidden, N_LOGITS))

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled encoder output and the multi-scale embedding (each stage's channel means
        and standard deviations): early stages keep the texture and contrast that tell
        another sequence or noise from a disc, which the last stage averages away."""
        e = self.encoder
        x = e.act(e.bn1(e.conv1(x)))  # type: ignore[operator]
        if not e.no_max_pool:
            x = e.maxpool(x)  # type: ignore[operator]
        pooled = []
        for layer in (e.layer1, e.layer2, e.layer3, e.layer4):
            x = layer(x)  # type: ignore[operator]
            pooled.append(x.mean(dim=(2, 3)))
            pooled.append(x.std(dim=(2, 3)))
        return e.avgpool(x).flatten(1), torch.cat(pooled, dim=1)  # type: ignore[operator]

    def forward_with_embedding(self, crops: torch.Tensor, presence: torch.Tensor,
                               feats: torch.Tensor, level: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, N_LOGITS], embedding [B, D])."""
        pooled, emb = self.embed(crops * presence[:, :, None, None])
        parts = [pooled, presence, nn.functional.one_hot(level, N_LEVEL_CODES).float()]
        if self.use_features:
            parts.append(feats)
        return self.head(torch.cat(parts, dim=1)), emb

    def forward(self, crops: torch.Tensor, presence: torch.Tensor, feats: torch.Tensor,
                level: torch.Tensor) -> torch.Tensor:
        return self.forward_with_embedding(crops, presence, feats, level)[0]

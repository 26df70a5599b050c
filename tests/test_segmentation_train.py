"""Training: a few steps on real slices lower the loss; a tiny run writes a loadable card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models import registry
from models.segmentation import data as seg_data
from models.segmentation.infer import Segmenter
from models.segmentation.net import build_network
from models.segmentation.train import TrainConfig, make_loss, train, train_step
from models.segmentation.transforms import prepare_slices, train_transforms


def test_split_is_fixed_and_patient_disjoint():
    patients = list(seg_data.spider_patients())
    split = seg_data.spider_split(patients)
    assert split == seg_data.spider_split(list(reversed(patients)))
    groups = [set(split.train), set(split.val), set(split.test)]
    assert sum(len(g) for g in groups) == len(patients) == 28
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2])
    assert not (groups[1] & groups[2]) and len(split.test) == seg_data.N_TEST_PATIENTS


def test_augmented_crops_have_patch_size_and_valid_labels():
    items = prepare_slices(seg_data.load_spider_patient("11", max_slices=2))
    assert items[0]["image"].shape[1:] == (301, 241)  # 320x256 at 0.94 mm -> 1 mm
    transforms = train_transforms((96, 96))
    transforms.set_random_state(seed=1)
    out = transforms(dict(items[0]))
    assert tuple(out["image"].shape) == (1, 96, 96)
    assert set(np.unique(np.asarray(out["label"]))) <= {0, 1, 2, 3}


def test_train_steps_lower_the_loss():
    torch.manual_seed(0)
    items = prepare_slices(seg_data.load_spider_patient("11", max_slices=2))
    # a fixed central crop holding vertebrae, discs and canal
    batch = {k: np.stack([it[k][:, 120:184, 100:164] for it in items]) for k in ("image", "label")}
    assert {1, 2, 3} <= set(np.unique(batch["label"]))
    net = build_network()
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3)
    loss_fn = make_loss()
    losses = [train_step(net, optimiser, loss_fn, batch, torch.device("cpu")) for _ in range(10)]
    assert losses[-1] < 0.8 * losses[0], losses


def test_tiny_training_run_writes_verified_card(tmp_path: Path):
    card = train(TrainConfig(
        out_dir=tmp_path, epochs=1, seed=3, max_train_patients=2, max_slices_per_patient=1,
        steps_per_epoch=2, batch_size=2, patch_size=(64, 64), evaluate_synthetic=False,
        command="lumbar-node train segmentation --epochs 1", log=lambda _: None))
    assert registry.verify("segmentation", root=tmp_path) == tmp_path / "segmentation.pt"
    assert set(card["metrics"]["dice_real_test"]) == {"vertebra", "disc", "canal"}
    assert card["split"]["test"] == list(seg_data.spider_split(
        list(seg_data.spider_patients())).test)
    assert Segmenter.load(device="cpu", root=tmp_path).card["sha256"] == card["sha256"]

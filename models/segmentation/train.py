"""Training loop: real SPIDER patients (+ synthetic studies) -> weights and model card.

Model selection uses validation patients drawn from the training side of the fixed split;
the held-out test patients and the held-out synthetic studies are touched exactly once,
after training, to fill the card's metrics.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.segmentation import data as seg_data
from models.segmentation.evaluate import evaluate_sets, mean_dice
from models.segmentation.net import DEFAULT_ARCHITECTURE, build_network
from models.segmentation.transforms import PATCH_SIZE, prepare_slices, train_transforms

if TYPE_CHECKING:
    import torch

VERSION = "1.1.0"
#: Seeds of the synthetic studies kept out of training, for the synthetic Dice.
SYNTHETIC_TEST_SEEDS: tuple[int, ...] = (900001, 900002, 900003)
#: First seed of the synthetic training studies (seed, seed+1, ...).
SYNTHETIC_TRAIN_SEED0 = 1000
#: Synthetic slices per epoch, as a fraction of the real slices: real anatomy stays dominant.
SYNTHETIC_FRACTION = 0.5


@dataclass
class TrainConfig:
    out_dir: Path
    epochs: int
    seed: int
    synthetic_studies: int = 0
    device: str = "auto"
    batch_size: int = 8
    learning_rate: float = 3e-3
    patch_size: tuple[int, int] = PATCH_SIZE
    synthetic_dir: Path = Path("/tmp/lumbar-node-synth")
    #: limits for quick runs (tests); None = everything
    max_train_patients: int | None = None
    max_slices_per_patient: int | None = None
    steps_per_epoch: int | None = None
    evaluate_synthetic: bool = True
    name: str = "segmentation"
    command: str = field(default_factory=lambda: " ".join(["lumbar-node", *sys.argv[1:]]))
    log: Any = print


def _seed_everything(seed: int) -> None:
    import torch
    from monai.utils import set_determinism

    set_determinism(seed=seed)
    torch.manual_seed(seed)


def train_step(net: torch.nn.Module, optimiser: torch.optim.Optimizer, loss_fn: Any,
               batch: dict[str, np.ndarray], device: torch.device) -> float:
    """One optimisation step on a batch of prepared, augmented crops; returns the loss."""
    import torch

    net.train()
    image = torch.as_tensor(batch["image"], dtype=torch.float32, device=device)
    label = torch.as_tensor(batch["label"], dtype=torch.long, device=device)
    optimiser.zero_grad(set_to_none=True)
    loss = loss_fn(net(image), label)
    loss.backward()
    optimiser.step()
    return float(loss.detach())


def make_loss() -> Any:
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)


def _collate(items: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(i[k]) for i in items]) for k in ("image", "label")}


def _load_real(config: TrainConfig) -> tuple[seg_data.Split, dict[str, seg_data.SliceSet]]:
    split = seg_data.spider_split(list(seg_data.spider_patients()))
    train = split.train[: config.max_train_patients] if config.max_train_patients else split.train
    split = seg_data.Split(tuple(train), split.val, split.test)
    sets = {p: seg_data.load_spider_patient(p, max_slices=config.max_slices_per_patient)
            for p in (*split.train, *split.val, *split.test)}
    return split, sets


def _load_synthetic(config: TrainConfig, seeds: list[int]) -> list[seg_data.SliceSet]:
    if not seeds:
        return []
    sets = []
    for study in seg_data.generate_synthetic(config.synthetic_dir, seeds):
        for key in seg_data.synthetic_series_keys(study):
            slice_set = seg_data.load_synthetic_series(study, key)
            slice_set.key = f"{study.name}:{key}"
            sets.append(slice_set)
    return sets


def train(config: TrainConfig) -> dict[str, Any]:
    """Train, select on validation patients, evaluate held-out data, write weights + card."""
    import torch

    from models.registry import write_card
    from models.segmentation.infer import resolve_device

    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}")
    if config.synthetic_studies < 0:
        raise ValueError(f"synthetic_studies must be >= 0, got {config.synthetic_studies}")
    if config.synthetic_studies and not seg_data.synthetic_available():
        raise ValueError("--synthetic-studies given but models.synth is not available")
    started = time.time()
    device = resolve_device(config.device)
    _seed_everything(config.seed)
    log = config.log

    split, real = _load_real(config)
    real_items = [it for p in split.train for it in prepare_slices(real[p])]
    synth_train = _load_synthetic(config, [SYNTHETIC_TRAIN_SEED0 + i
                                           for i in range(config.synthetic_studies)])
    synth_items = [it for s in synth_train for it in prepare_slices(s)]
    log(f"real: {len(split.train)} train patients ({len(real_items)} slices), "
        f"val {list(split.val)}, test {list(split.test)}; synthetic: "
        f"{config.synthetic_studies} studies ({len(synth_items)} slices); device {device}")

    transforms = train_transforms(config.patch_size)
    transforms.set_random_state(seed=config.seed)
    rng = np.random.default_rng(config.seed)
    net = build_network(DEFAULT_ARCHITECTURE).to(device)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    n_synth = min(len(synth_items), int(round(SYNTHETIC_FRACTION * len(real_items))))
    per_epoch = (len(real_items) + n_synth) // config.batch_size
    steps_per_epoch = max(1, min(per_epoch, config.steps_per_epoch or per_epoch))
    total = steps_per_epoch * config.epochs
    warmup = min(50, total // 10 + 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min(
        (s + 1) / warmup, 0.5 * (1 + np.cos(np.pi * min(1.0, s / total)))))
    loss_fn = make_loss()
    val_sets = [real[p] for p in split.val]
    best: tuple[float, int, dict[str, Any]] = (-1.0, 0, {})
    history = []
    for epoch in range(1, config.epochs + 1):
        synth_pick = [synth_items[i] for i in rng.permutation(len(synth_items))[:n_synth]]
        pool = real_items + synth_pick
        order = rng.permutation(len(pool))
        losses = []
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            batch = _collate([transforms(dict(pool[i])) for i in idx])
            losses.append(train_step(net, optimiser, loss_fn, batch, device))
            scheduler.step()
        val = mean_dice(evaluate_sets(net, val_sets, device))
        score = float(np.nanmean(list(val.values())))
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_dice": val})
        if score > best[0]:
            best = (score, epoch, {k: v.detach().clone() for k, v in net.state_dict().items()})
        log(f"epoch {epoch}/{config.epochs} loss {np.mean(losses):.4f} val dice "
            + " ".join(f"{k} {v:.3f}" for k, v in val.items())
            + f" (best epoch {best[1]}) {time.time() - started:.0f}s")

    net.load_state_dict(best[2])
    per_patient = evaluate_sets(net, [real[p] for p in split.test], device)
    metrics: dict[str, Any] = {
        "dice_real_test": mean_dice(per_patient),
        "dice_real_test_per_patient": per_patient,
        "dice_real_val": history[best[1] - 1]["val_dice"],
    }
    synth_test_keys: list[str] = []
    if config.evaluate_synthetic and seg_data.synthetic_available():
        synth_test = _load_synthetic(config, list(SYNTHETIC_TEST_SEEDS))
        synth_test_keys = [s.key for s in synth_test]
        per_series = evaluate_sets(net, synth_test, device)
        metrics["dice_synthetic_test"] = mean_dice(per_series)
        metrics["dice_synthetic_test_per_series"] = per_series
    log("test dice (real): " + " ".join(f"{k} {v:.3f}"
                                         for k, v in metrics["dice_real_test"].items()))
    if "dice_synthetic_test" in metrics:
        log("test dice (synthetic): " + " ".join(
            f"{k} {v:.3f}" for k, v in metrics["dice_synthetic_test"].items()))

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_name = f"{config.name}.pt"
    torch.save({k: (v.half() if v.is_floating_point() else v) for k, v in best[2].items()},
               out_dir / weights_name)
    card = {
        "name": config.name,
        "version": VERSION,
        "task": "segmentation",
        "architecture": DEFAULT_ARCHITECTURE,
        "weights": weights_name,
        "sha256": "",
        "classes": ["background", "vertebra", "disc", "canal"],
        "input": {
            "orientation": "sagittal slices turned to rows head->feet, columns "
                           "anterior->posterior",
            "spacing_mm": 1.0,
            "intensity": "per-slice 0.5-99.5 percentile range mapped to [0, 1]",
        },
        "design": "2-D, slice by slice: clinical sagittal slices are 3-4 mm apart while the "
                  "SPIDER training slices are 0.9 mm apart, so through-plane (2.5-D) context "
                  "would differ between training and use; in-plane structure carries the "
                  "information. Scores are resampled back to the source grid.",
        "training_data": {
            "real": {"dataset": "SPIDER T2-SPACE sagittal 2-D slices (CC-BY 4.0)",
                     "patients": len(split.train), "slices": len(real_items)},
            "synthetic": {"studies": config.synthetic_studies, "slices": len(synth_items),
                          "seeds": [SYNTHETIC_TRAIN_SEED0,
                                    SYNTHETIC_TRAIN_SEED0 + config.synthetic_studies - 1]
                          if config.synthetic_studies else []},
        },
        "split": {**split.as_dict(), "split_seed": seg_data.SPLIT_SEED,
                  "synthetic_test": synth_test_keys},
        "metrics": metrics,
        "reference": {"source": "SPIDER paper nnU-Net (3-D, hidden test set)",
                      "dice": {"vertebra": 0.92, "disc": 0.86, "canal": 0.92}},
        "training": {"epochs": config.epochs, "best_epoch": best[1], "seed": config.seed,
                     "batch_size": config.batch_size, "steps_per_epoch": steps_per_epoch,
                     "learning_rate": config.learning_rate,
                     "patch_size": list(config.patch_size), "loss": "Dice + cross-entropy",
                     "history": history},
        "command": config.command,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training_time_s": round(time.time() - started, 1),
        "device": f"{device.type} ({platform.processor() or platform.machine()}, "
                  f"torch {torch.__version__}, {torch.get_num_threads()} threads)",
    }
    card_path = write_card(card, out_dir)
    log(f"wrote {out_dir / weights_name} and {card_path} in {card['training_time_s']:.0f}s")
    return json.loads(card_path.read_text())

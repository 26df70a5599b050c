"""What the disc side inputs carry on their own: a class-weighted linear model on the
measured heights and slip, with and without the signal ratios of models.discs.signal.

Same samples (node segmentation -> labelling -> measurements, cached like
``lumbar-node train disc``) and the same patient folds as the disc network's
cross-validation; Pfirrmann balanced accuracy, linear kappa and share off by more than one
grade, Modic presence balanced accuracy and AUC, from out-of-fold predictions. It also prints
the mean T2 nucleus-over-CSF log ratio per expert Pfirrmann grade. Development figures.

    .venv/bin/python benchmarks/disc_signal.py [--data DIR] [--folds 5] [--seed 20250]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from models.discs.dataset import DEFAULT_CACHE, DEFAULT_COPIES, N_LEVEL_CODES, build_samples
from models.discs.fit import class_weights, patient_folds
from models.discs.metrics import auc, balanced_accuracy, kappa_linear
from models.discs.signal import SIGNAL_FEATURES
from models.realdata.spider import realdata_root
from models.registry import load_card


def _inputs(d: dict[str, np.ndarray], signal: bool) -> np.ndarray:
    parts = [d["feats"], d["feat_mask"], np.eye(N_LEVEL_CODES)[d["level"]], d["presence"]]
    if signal:
        parts += [d["sig"], d["sig_mask"]]
    return np.concatenate(parts, axis=1).astype(np.float32)


def _softmax_regression(x: np.ndarray, y: np.ndarray, k: int) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
    """Class-weighted softmax regression (L2 1e-2, LBFGS) on standardised inputs."""
    xt, yt = torch.tensor(x), torch.tensor(y).long()
    w = torch.zeros(x.shape[1], k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    weight = torch.tensor(class_weights(y, k))
    opt = torch.optim.LBFGS([w, b], max_iter=300)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(xt @ w + b, yt, weight=weight)
                + 1e-2 * (w ** 2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _out_of_fold(x: np.ndarray, y: np.ndarray, k: int, fold: np.ndarray) -> np.ndarray:
    """Out-of-fold probabilities, standardised on the training folds only."""
    out = np.zeros((len(y), k), np.float32)
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        w, b = _softmax_regression((x[tr] - mu) / sd, y[tr], k)
        out[te] = torch.softmax(torch.tensor((x[te] - mu) / sd) @ w + b, 1).numpy()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=realdata_root() / "spider-midsag")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20250)
    args = parser.parse_args(argv)
    excluded = set(load_card("segmentation")["split"]["test"])
    d = build_samples(args.data, DEFAULT_CACHE, DEFAULT_COPIES, excluded, seed=args.seed)
    fold_of = patient_folds(d["patient"], args.folds, args.seed)
    fold = np.array([fold_of[str(p)] for p in d["patient"]])
    print(f"{len(fold)} discs, {len(fold_of)} patients, {args.folds} folds by patient; "
          f"{d['ambiguous'].mean():.1%} from images whose level labelling is ambiguous")
    print(f"{'inputs':<26}{'pf bal.acc':>11}{'pf kappa':>10}{'pf off>1':>10}"
          f"{'modic bal.acc':>15}{'modic AUC':>11}")
    for signal in (False, True):
        x = _inputs(d, signal)
        pf = _out_of_fold(x, d["pfirrmann"], 5, fold).argmax(1)
        mo = _out_of_fold(x, d["modic"], 4, fold)
        y, ym = d["pfirrmann"], d["modic"]
        name = "heights + signal ratios" if signal else "heights only"
        print(f"{name:<26}{balanced_accuracy(y, pf):>11.3f}{kappa_linear(y, pf, 5):>10.3f}"
              f"{np.mean(np.abs(y - pf) > 1):>10.3f}"
              f"{balanced_accuracy(ym > 0, mo.argmax(1) > 0):>15.3f}"
              f"{auc(1 - mo[:, 0], ym > 0):>11.3f}")
    i = SIGNAL_FEATURES.index("nucleus_over_csf")
    present = d["sig_mask"][:, i] > 0
    means = [float(d["sig"][(d["pfirrmann"] == g) & present, i].mean()) for g in range(5)]
    print("T2 nucleus/CSF log ratio by Pfirrmann 1-5:", " ".join(f"{m:.2f}" for m in means))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fitting the disc network: batches, augmentation, losses, temperatures and folds.

Kept apart from the command (:mod:`models.discs.train`) so the benchmark and the tests use
the same fold assignment and training loop the shipped weights came from.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.discs.dataset import N_FEATURES
from models.discs.net import BINARY, HEADS, N_MODIC, N_PFIRRMANN, DiscNet, split_logits
from models.discs.signal import N_SIGNAL

#: soft ordinal targets for Pfirrmann (Diaz & Marathe 2019, SORD): a neighbour grade costs
#: less than a grade two apart, which is what the share off by more than one grade measures
SORD_SHARPNESS = 2.0
#: class weights are capped so two Modic type I discs do not dominate the loss
MAX_CLASS_WEIGHT = 6.0


def patient_folds(patients: np.ndarray, folds: int, seed: int) -> dict[str, int]:
    """Patient id -> fold: folds by patient, never by disc or image (discs and the T1/T2 of
    one patient are strongly correlated)."""
    unique = sorted({str(p) for p in patients})
    if folds < 2 or folds > len(unique):
        raise ValueError(f"folds must be between 2 and the {len(unique)} patients, got {folds}")
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[i]: k % folds for k, i in enumerate(order)}


def class_weights(y: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(y, minlength=n).astype(float)
    w = np.where(counts > 0, len(y) / (n * np.maximum(counts, 1)), 0.0)
    return np.minimum(w, MAX_CLASS_WEIGHT).astype(np.float32)


def _batch(data: dict[str, np.ndarray], idx: np.ndarray, copy: np.ndarray | None = None,
           signal: bool = False) -> dict[str, torch.Tensor]:
    copy = np.zeros(len(idx), int) if copy is None else copy
    crops = np.stack([data["t2"][idx, copy], data["t1"][idx, copy]], axis=1)
    parts = [data["feats"][idx], data["feat_mask"][idx]]
    if signal:
        parts += [data["sig"][idx], data["sig_mask"][idx]]
    feats = np.concatenate(parts, axis=1)
    return {"crops": torch.as_tensor(crops.astype(np.float32)),
            "presence": torch.as_tensor(data["presence"][idx].astype(np.float32)),
            "feats": torch.as_tensor(feats.astype(np.float32)),
            "level": torch.as_tensor(data["level"][idx].astype(np.int64))}


def _augment(b: dict[str, torch.Tensor], rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Contrast, gain and noise; one series dropped at random where both exist (so a
    missing T1 is familiar); measured features hidden at random (a failed measurement)."""
    n = b["crops"].shape[0]
    gain = torch.as_tensor(rng.uniform(0.85, 1.15, (n, 2, 1, 1))).float()
    gamma = torch.as_tensor(rng.uniform(0.8, 1.25, (n, 2, 1, 1))).float()
    x = b["crops"].clamp(min=0) ** gamma * gain
    b["crops"] = x + 0.03 * torch.randn_like(x)
    presence = b["presence"].clone()
    both = presence.sum(1) == 2
    drop = torch.as_tensor(rng.random(n))
    presence[both & (drop < 0.2), 1] = 0.0
    presence[both & (drop > 0.92), 0] = 0.0
    b["presence"] = presence
    if b["feats"].shape[1] > 2 * N_FEATURES:
        # a dropped series takes its signal ratios with it, as at inference
        sig = b["feats"][:, 2 * N_FEATURES:].view(n, 2, 2, N_SIGNAL)  # [vals|mask][t2|t1]
        b["feats"] = torch.cat([b["feats"][:, :2 * N_FEATURES],
                                (sig * presence[:, None, :, None]).reshape(n, -1)], dim=1)
    hide = torch.as_tensor(rng.random(n) < 0.1)
    b["feats"] = b["feats"] * (~hide).float()[:, None]
    return b


def _sord(y: torch.Tensor, n: int) -> torch.Tensor:
    grades = torch.arange(n, dtype=torch.float32)
    return torch.softmax(-SORD_SHARPNESS * (grades[None] - y[:, None].float()) ** 2, dim=1)


class Loss(nn.Module):
    """Class-weighted multi-task loss: SORD cross-entropy (Pfirrmann), weighted CE (Modic),
    BCE with balanced positive weights (binary findings)."""

    def __init__(self, data: dict[str, np.ndarray], idx: np.ndarray) -> None:
        super().__init__()
        self.w_pf = torch.as_tensor(class_weights(data["pfirrmann"][idx], N_PFIRRMANN))
        self.w_mo = torch.as_tensor(class_weights(data["modic"][idx], N_MODIC))
        pos = np.array([data[b][idx].mean() for b in BINARY])
        self.pos_weight = torch.as_tensor(np.clip((1 - pos) / np.maximum(pos, 1e-3), 0.2,
                                                  15.0)).float()

    def forward(self, logits: torch.Tensor, y: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = split_logits(logits)
        log_p = torch.log_softmax(parts["pfirrmann"], 1)
        pf = -(self.w_pf[y["pfirrmann"]] * (_sord(y["pfirrmann"], N_PFIRRMANN) * log_p).sum(1))
        mo = nn.functional.cross_entropy(parts["modic"], y["modic"], weight=self.w_mo)
        binary = torch.stack([parts[b] for b in BINARY], 1)
        bce = nn.functional.binary_cross_entropy_with_logits(
            binary, y["binary"].float(), pos_weight=self.pos_weight)
        return pf.mean() / self.w_pf.mean() + mo + 2.0 * bce


def targets(data: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, torch.Tensor]:
    return {"pfirrmann": torch.as_tensor(data["pfirrmann"][idx].astype(np.int64)),
            "modic": torch.as_tensor(data["modic"][idx].astype(np.int64)),
            "binary": torch.as_tensor(np.stack([data[b][idx] for b in BINARY], 1))}


def train_net(data: dict[str, np.ndarray], idx: np.ndarray, *, epochs: int, seed: int,
              architecture: dict, batch: int = 32, lr: float = 2e-3,
              log: bool = False) -> DiscNet:
    """Fixed-length training (no epoch chosen on held-out discs: nothing to leak)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = DiscNet(**architecture)
    loss_fn = Loss(data, idx)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-3)
    steps = epochs * int(np.ceil(len(idx) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.15)
    copies = data["t2"].shape[1]
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(idx)
        total = 0.0
        for start in range(0, len(order), batch):
            sel = order[start:start + batch]
            b = _augment(_batch(data, sel, rng.integers(0, copies, len(sel)),
                                net.use_signal), rng)
            loss = loss_fn(net(b["crops"], b["presence"], b["feats"], b["level"]),
                           targets(data, sel))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(sel)
        if log and (epoch + 1) % 5 == 0:
            print(f"    epoch {epoch + 1}/{epochs} loss {total / len(idx):.3f}", flush=True)
    return net.eval()


@torch.inference_mode()
def infer(net: DiscNet, data: dict[str, np.ndarray], idx: np.ndarray, batch: int = 128,
          tta: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Logits (averaged over the exact and the jittered crops with ``tta``: the labelling's
    placement error then matters less) and embeddings of the exact crops."""
    net.eval()
    copies = data["t2"].shape[1] if tta else 1
    logits, embs = [], []
    for start in range(0, len(idx), batch):
        sel = idx[start:start + batch]
        total = None
        for c in range(copies):
            b = _batch(data, sel, np.full(len(sel), c), net.use_signal)
            lo, em = net.forward_with_embedding(b["crops"], b["presence"], b["feats"],
                                                b["level"])
            total = lo if total is None else total + lo
            if c == 0:
                embs.append(em.numpy())
        assert total is not None
        logits.append((total / copies).numpy())
    return np.concatenate(logits), np.concatenate(embs)


def probabilities(logits: np.ndarray, temperatures: dict[str, float] | None = None
                  ) -> dict[str, np.ndarray]:
    """Calibrated probabilities per head (softmax heads [n, k], binary heads [n])."""
    temperatures = temperatures or {}
    parts = split_logits(torch.as_tensor(np.asarray(logits, np.float32)))
    out = {}
    for name in HEADS:
        z = parts[name] / float(temperatures.get(name, 1.0))
        out[name] = (torch.softmax(z, 1) if z.ndim == 2 else torch.sigmoid(z)).numpy()
    return out


def fit_temperatures(logits: np.ndarray, data: dict[str, np.ndarray],
                     idx: np.ndarray) -> dict[str, float]:
    """One temperature per head minimising the out-of-fold negative log-likelihood; a
    temperature never changes a decision, only how sure the probabilities are."""
    from scipy.optimize import minimize_scalar

    parts = {k: v.double() for k, v in split_logits(torch.as_tensor(logits)).items()}
    out = {}
    for name in HEADS:
        y = torch.as_tensor(data[name][idx].astype(np.int64))
        z = parts[name]

        def nll(log_t: float, z: torch.Tensor = z, y: torch.Tensor = y) -> float:
            s = z / np.exp(log_t)
            if s.ndim == 2:
                return float(nn.functional.cross_entropy(s, y))
            return float(nn.functional.binary_cross_entropy_with_logits(s, y.double()))

        res = minimize_scalar(nll, bounds=(np.log(0.2), np.log(10.0)), method="bounded")
        out[name] = round(float(np.exp(res.x)), 4)
    return out

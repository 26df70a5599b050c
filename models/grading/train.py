"""``lumbar-node train grader``: fit the learned grader on synthetic studies.

Training studies come from consecutive seeds (``--seed`` .. ``--seed + --studies - 1``)
with Moderate/Severe over-represented (:func:`models.grading.dataset.enriched_grades`);
validation studies from ``--seed + 10000`` on, at the generator's natural prevalence. The
split is by study, never by level (levels of one patient are correlated). Training uses the
RSNA class weights; the epoch with the best validation score is kept, then one temperature
per condition group is fitted on validation (never class-prior offsets: they could change
a grade) and the out-of-distribution gate's statistics (:mod:`models.grading.grader_ood`)
on the training and validation crops. Writes ``grader.pt`` and its model card
``grader.json``; the card's ``summary`` and ``training_data_kind`` state plainly that the
training data is synthetic, and its figures are validation figures (used for selection and
calibration); test figures come from ``benchmarks/grading.py --write-card`` only.

``--recalibrate`` keeps the trained weights in ``--out`` and refits only the temperatures
and the gate on the same (regenerated) studies, after checking that they reproduce the
card's uncalibrated validation score.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from lumbar_common.vocabulary import GRADE_WEIGHTS, GRADES, LEVELS, rsna_key

DEFAULT_CACHE = Path(os.environ.get("LUMBAR_NODE_CACHE", Path.home() / ".cache" / "lumbar-node"))
SUMMARY = ("Trained on synthetic studies only (lumbar-node synth); not validated on patient "
           "data. Grades spinal canal, neural foraminal and subarticular stenosis per level.")
#: output index -> temperature group
GROUPS: tuple[str, ...] = ("canal", "foramen", "foramen", "subarticular", "subarticular")
_KEYS = (("spinal_canal_stenosis", None), ("neural_foraminal_narrowing", "left"),
         ("neural_foraminal_narrowing", "right"), ("subarticular_stenosis", "left"),
         ("subarticular_stenosis", "right"))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="weights folder (models/weights)")
    parser.add_argument("--studies", type=int, default=120,
                        help="training studies (enriched grades)")
    parser.add_argument("--val-studies", type=int, default=30,
                        help="validation studies (natural prevalence), used for calibration")
    parser.add_argument("--seed", type=int, default=1000, help="first training study seed")
    parser.add_argument("--val-seed", type=int, default=None,
                        help=f"first validation seed (default: --seed + {10000})")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--copies", type=int, default=2,
                        help="geometry draws per level (the first exact, others jittered)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE / "grader",
                        help="where generated studies' crops are kept between runs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rsna", type=Path, default=None,
                        help="train on an RSNA 2024 folder (train.csv, train_images/ ...) instead "
                             "of synthetic studies; the last --val-studies studies validate")
    parser.add_argument("--no-features", action="store_true",
                        help="crops only: do not give the head the measured scalars")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (more than one thrashes on a busy machine)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel study generation")
    parser.add_argument("--recalibrate", action="store_true",
                        help="keep the weights in --out; refit temperatures and the "
                             "out-of-distribution gate on the same studies")


#: validation seeds start this far above the training seeds
VAL_SEED_OFFSET = 10000


def _gen_one(args: tuple[str, int, int, bool]) -> str:
    from models.grading.dataset import build_cache

    cache, seed, copies, enrich = args
    return str(build_cache(Path(cache), [seed], copies, enrich=enrich)[0])


def _cache(cache: Path, seeds: list[int], copies: int, jobs: int, enrich: bool) -> list[Path]:
    todo = [(str(cache), s, copies, enrich) for s in seeds]
    if jobs > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(jobs) as pool:
            return [Path(p) for p in pool.map(_gen_one, todo, chunksize=1)]
    return [Path(_gen_one(t)) for t in todo]


def _tensors(data: dict[str, np.ndarray], idx: np.ndarray, device: str) -> dict:
    import torch

    out = {}
    for k in ("canal", "for_l", "for_r", "ax_l", "ax_r"):
        out[k] = torch.as_tensor(data[k][idx]).float().to(device)
    out["presence"] = torch.as_tensor(data["presence"][idx]).float().to(device)
    out["level"] = torch.as_tensor(data["level"][idx]).long().to(device)
    out["feats"] = torch.as_tensor(data["feats"][idx]).float().to(device)
    out["y"] = torch.as_tensor(data["y"][idx]).long().to(device)
    out["y_lss"] = torch.as_tensor(data["y_lss"][idx]).long().to(device)
    return out


def _augment(b: dict, rng: np.random.Generator) -> dict:
    """Intensity gain/noise and whole-series dropout (so missing series are familiar)."""
    import torch

    n = b["canal"].shape[0]
    for k in ("canal", "for_l", "for_r", "ax_l", "ax_r"):
        gain = torch.as_tensor(rng.uniform(0.8, 1.2, (n, 1, 1, 1))).float()
        b[k] = b[k] * gain.to(b[k].device) + 0.02 * torch.randn_like(b[k])
    b["feats"] = b["feats"] + 0.02 * torch.randn_like(b["feats"])
    drop = torch.as_tensor(rng.random((n, 2)) < 0.15).to(b["presence"].device)
    b["presence"] = b["presence"] * (~drop).float()
    return b


def _loss(logits, lss_logits, b: dict):  # noqa: ANN001 - torch types imported lazily
    import torch
    from torch.nn import functional as F

    w = torch.tensor(GRADE_WEIGHTS, device=logits.device)
    t1, ax = b["presence"][:, 0], b["presence"][:, 1]
    masks = [torch.ones_like(t1), t1, t1, ax, ax]
    total = logits.new_zeros(())
    for j, m in enumerate(masks):
        yj = b["y"][:, j]
        m = m * (yj >= 0).float()  # unlabelled findings (public data) do not count
        yj = yj.clamp(min=0)
        ce = F.cross_entropy(logits[:, j], yj, weight=w, reduction="none")
        wy = w[yj]
        total = total + (ce * m).sum() / (wy * m).sum().clamp(min=1e-6)
    for j in range(2):
        valid = (b["y_lss"][:, j] >= 0).float() * t1
        ce = F.cross_entropy(lss_logits[:, j], b["y_lss"][:, j].clamp(min=0), reduction="none")
        total = total + 0.5 * (ce * valid).sum() / valid.sum().clamp(min=1.0)
    return total


def predict_logits(net, data: dict[str, np.ndarray], device: str,  # noqa: ANN001
                   batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    import torch

    net.eval()
    outs, lsss = [], []
    with torch.inference_mode():
        for i in range(0, len(data["y"]), batch):
            b = _tensors(data, np.arange(i, min(i + batch, len(data["y"]))), device)
            o, q = net(b["canal"], b["for_l"], b["for_r"], b["ax_l"], b["ax_r"],
                       b["presence"], b["level"], b["feats"])
            outs.append(o.cpu().numpy())
            lsss.append(q.cpu().numpy())
    return np.concatenate(outs), np.concatenate(lsss)


def score_split(data: dict[str, np.ndarray], logits: np.ndarray, lss_logits: np.ndarray,
                calib: dict[str, dict]) -> dict[str, float]:
    """RSNA score (and LSS accuracy/macro-F1) of one split, with the given calibration."""
    from models.grading.calibration import calibrated
    from models.grading.metric import lss_scores, rsna_score

    truth: dict[str, dict[str, str]] = {}
    pred: dict[str, dict[str, list[float]]] = {}
    for i in range(len(data["y"])):
        study = str(data["study"][i])
        level = LEVELS[int(data["level"][i])]
        for j, (cond, side) in enumerate(_KEYS):
            if data["y"][i, j] < 0:
                continue
            key = rsna_key(cond, side, level)
            truth.setdefault(study, {})[key] = GRADES[int(data["y"][i, j])]
            c = calib.get(GROUPS[j], {})
            pred.setdefault(study, {})[key] = calibrated(
                logits[i, j], c.get("temperature", 1.0)).tolist()
    out = {k: round(v, 4) for k, v in rsna_score(truth, pred).items()}
    valid = data["y_lss"] >= 0
    if valid.any():
        lss = lss_scores(data["y_lss"][valid].tolist(), lss_logits.argmax(-1)[valid].tolist())
        out.update({f"lss_{k}": round(v, 4) for k, v in lss.items()})
    return out


def fit_calibration(data: dict[str, np.ndarray], logits: np.ndarray,
                    lss_logits: np.ndarray) -> dict[str, dict]:
    """Per condition group: the temperature fitted on validation (argmax unchanged)."""
    from models.grading.calibration import fit_group_temperatures

    return fit_group_temperatures(data, logits, lss_logits, GROUPS)


def run(args: argparse.Namespace) -> int:
    import torch

    from models.grading.dataset import load_cache
    from models.grading.learned_grader import resolve_device

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    device = resolve_device(args.device)
    t0 = time.time()
    if args.val_studies < 1:
        raise ValueError(f"--val-studies {args.val_studies}: need at least 1 validation study")
    if args.rsna is not None:
        return _run_rsna(args, t0, device, rng)
    if args.studies < 2:
        raise ValueError(f"--studies {args.studies}: need at least 2 training studies")
    seeds = list(range(args.seed, args.seed + args.studies))
    val_start = args.seed + VAL_SEED_OFFSET if args.val_seed is None else args.val_seed
    val_seeds = list(range(val_start, val_start + args.val_studies))
    if set(val_seeds) & set(seeds):
        raise ValueError(f"validation seeds {val_seeds[0]}..{val_seeds[-1]} overlap training")
    train = _with_study(_cache(args.cache, seeds, args.copies, args.jobs, True), load_cache)
    val_paths = _cache(args.cache, val_seeds, args.copies, args.jobs, False)
    val = _with_study(val_paths, load_cache, exact_only=True)
    t_data = time.time() - t0
    print(f"data: {len(train['y'])} train / {len(val['y'])} val level samples "
          f"from {len(seeds)} + {len(val_seeds)} studies in {t_data:.0f}s", flush=True)
    common = (f"lumbar-node train grader --out {args.out} --studies {args.studies} "
              f"--val-studies {args.val_studies} --seed {args.seed} --val-seed {val_start}")
    data_card = {
        "summary": SUMMARY,
        "training_data_kind": "synthetic",
        "version_suffix": f"-s{args.seed}n{args.studies}",
        "training_data": {"source": "lumbar-node synth (synthetic studies only)",
                          "seeds": [seeds[0], val_seeds[-1]],
                          "studies": len(seeds) + len(val_seeds),
                          "train_grades": "enriched (models.grading.dataset.enriched_grades)",
                          "validation_grades": "generator's natural prevalence",
                          "level_samples": int(len(train["y"])), "copies_per_level": args.copies},
        "split": {"train": [seeds[0], seeds[-1]], "val": [val_seeds[0], val_seeds[-1]],
                  "by": "study seed (ranges, inclusive)"},
        "command": f"{common} --epochs {args.epochs} --copies {args.copies}",
        "calibration_command": f"{common} --copies {args.copies} --recalibrate",
    }
    # every geometry draw of the validation studies sets the gate's limit (more crops for
    # a high percentile; jittered levels are what the level finder delivers)
    val_all = _with_study(val_paths, load_cache)
    if args.recalibrate:
        net, card = _load_trained(args.out, device)
        return _calibrate_and_write(args, net, train, val, val_all, t0, device,
                                    data_card, card)
    net = _train(args, train, val, t0, device, rng)
    return _calibrate_and_write(args, net, train, val, val_all, t0, device, data_card)


def _train(args: argparse.Namespace, train: dict[str, np.ndarray], val: dict[str, np.ndarray],
           t0: float, device: str, rng: np.random.Generator):
    """Train; return the network at the epoch with the best uncalibrated validation score."""
    import torch

    from models.grading.learned import GraderNet

    net = GraderNet(use_features=not args.no_features).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * int(np.ceil(len(train["y"]) / args.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    best: tuple[float, dict] | None = None
    for epoch in range(args.epochs):
        net.train()
        order = rng.permutation(len(train["y"]))
        losses = []
        for i in range(0, len(order), args.batch):
            b = _augment(_tensors(train, order[i:i + args.batch], device), rng)
            logits, lss = net(b["canal"], b["for_l"], b["for_r"], b["ax_l"], b["ax_r"],
                              b["presence"], b["level"], b["feats"])
            loss = _loss(logits, lss, b)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        vl, vq = predict_logits(net, val, device)
        val_score = score_split(val, vl, vq, {})["score"]
        print(f"epoch {epoch + 1}/{args.epochs} loss {np.mean(losses):.4f} "
              f"val RSNA {val_score:.4f} ({time.time() - t0:.0f}s)", flush=True)
        if best is None or val_score < best[0]:
            best = (val_score, {k: v.detach().clone() for k, v in net.state_dict().items()})
    assert best is not None
    net.load_state_dict(best[1])
    return net


def _load_trained(folder: Path, device: str):
    """The registered weights in ``folder`` (sha256 checked) and their card."""
    import torch

    from models import registry
    from models.grading.learned import GraderNet
    from models.grading.learned_grader import MODEL_NAME

    card = registry.load_card(MODEL_NAME, folder)
    ckpt = torch.load(registry.verify(MODEL_NAME, folder), map_location=device,
                      weights_only=True)
    net = GraderNet(**ckpt["config"])
    net.load_state_dict(ckpt["state_dict"])
    return net.to(device).eval(), card


#: a recalibration must reproduce the recorded uncalibrated validation score this closely,
#: or the regenerated studies are not the ones the weights were selected on
REPRODUCE_TOLERANCE = 0.002


def _calibrate_and_write(args: argparse.Namespace, net, train: dict[str, np.ndarray],  # noqa: ANN001
                         val: dict[str, np.ndarray], val_all: dict[str, np.ndarray], t0: float,
                         device: str, data_card: dict, old_card: dict | None = None) -> int:
    """Fit temperatures and the OOD gate, write weights and card (``old_card``: keep the
    trained weights and the training record, refit only what comes after training)."""
    import torch

    from models import registry
    from models.grading.grader_ood import embed_split, fit_gate
    from models.grading.learned_grader import MODEL_NAME, WEIGHTS_NAME

    vl, vq = predict_logits(net, val, device)
    before = score_split(val, vl, vq, {})
    if old_card is not None:
        recorded = old_card["metrics"]["validation_uncalibrated"]["score"]
        if abs(before["score"] - recorded) > REPRODUCE_TOLERANCE:
            raise ValueError(f"regenerated validation scores {before['score']} uncalibrated, "
                             f"the card recorded {recorded}: not the same studies")
    calib = fit_calibration(val, vl, vq)
    after = score_split(val, vl, vq, calib)
    print(f"validation RSNA score {before['score']} -> {after['score']} calibrated "
          f"({calib})", flush=True)
    _, _, train_emb = embed_split(net, train, device)
    _, _, val_emb = embed_split(net, val_all, device)
    gate, ood_card = fit_gate(train_emb, train["presence"], val_emb, val_all["presence"])
    print(f"out-of-distribution limits: {ood_card['groups']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / WEIGHTS_NAME
    torch.save({"state_dict": net.state_dict(),
                "config": {"width": net.width, "use_features": net.use_features},
                "calibration": calib, "ood": gate.to_checkpoint()}, weights)
    now = datetime.now(UTC)
    card = {
        "summary": data_card["summary"],
        "name": MODEL_NAME,
        "version": now.strftime("%Y.%m.%d") + data_card["version_suffix"],
        "task": "stenosis grading: spinal canal, neural foramina, subarticular (RSNA 3-grade, "
                "LSS 4-grade foramina)",
        "training_data_kind": data_card["training_data_kind"],
        "validated_on_real": [],
        "architecture": {"class": "models.grading.learned.GraderNet",
                         "args": {"width": net.width, "use_features": net.use_features},
                         "description": "3 MONAI 2.5-D ResNet encoders (sag T2 canal, sag T1 "
                                        "foramina, axial T2 recesses; layers 1-1-1-1) + joint "
                                        "MLP head per level that also sees the measurement "
                                        "grader's scalars; temperature calibrated"},
        "weights": WEIGHTS_NAME,
        "sha256": "0" * 64,  # filled in by registry.write_card
        "training_data": data_card["training_data"],
        "split": data_card["split"],
        "metrics": {"validation": after, "validation_uncalibrated": before,
                    "reference": {"uniform_baseline_group_loss": round(float(np.log(3)), 4)}},
        "metrics_note": "validation: the studies that chose the epoch and fitted the "
                        "temperatures (not held out); test: benchmarks/grading.py --write-card",
        "calibration": calib,
        "ood": ood_card,
        "command": data_card["command"],
        "created": now.isoformat(timespec="seconds"),
        "training_time_s": round(time.time() - t0, 1),
        "device": device,
    }
    if old_card is not None:  # same trained weights: keep the training record
        base = str(old_card["version"]).split("+")[0]
        card.update({k: old_card[k] for k in ("command", "created", "training_time_s",
                                              "device") if k in old_card})
        card["version"] = f"{base}+cal{now.strftime('%Y%m%d')}"
        card["calibration_command"] = data_card["calibration_command"]
        card["calibrated"] = now.isoformat(timespec="seconds")
    card_path = registry.write_card(card, args.out)
    print(f"wrote {weights} and {card_path}", flush=True)
    return 0


def _with_study(paths: list[Path], loader, exact_only: bool = False  # noqa: ANN001
                ) -> dict[str, np.ndarray]:
    """Load cached samples, tagging each with its study (seed) for per-study scoring."""
    parts = []
    for p in paths:
        d = loader([p])
        n = len(d["y"])
        d["study"] = np.array([p.stem] * n)
        if exact_only:  # first copy of each level only: validation on true geometry draws
            copies = n // max(1, len(np.unique(d["level"])))
            keep = np.arange(0, n, copies) if copies > 1 else np.arange(n)
            d = {k: v[keep] for k, v in d.items()}
        parts.append(d)
    return {k: np.concatenate([d[k] for d in parts]) for k in parts[0]}


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m models.grading.train")
    configure(_parser)
    raise SystemExit(run(_parser.parse_args()))


RSNA_SUMMARY = ("Trained on the RSNA 2024 lumbar spine data (levels from the readers' canal "
                "coordinates). Grades spinal canal, neural foraminal and subarticular stenosis.")


def _run_rsna(args: argparse.Namespace, t0: float, device: str,
              rng: np.random.Generator) -> int:
    """Training data from an RSNA-format folder; crops cached per study like synthetic ones."""
    from models.grading.readers.rsna import read_rsna
    from models.grading.readers.rsna_anatomy import rsna_samples

    studies = [s for s in read_rsna(args.rsna) if s.labels]
    if len(studies) < args.val_studies + 2:
        raise ValueError(f"{args.rsna}: {len(studies)} labelled studies, need at least "
                         f"{args.val_studies + 2} for --val-studies {args.val_studies}")
    args.cache.mkdir(parents=True, exist_ok=True)
    parts: list[dict[str, np.ndarray]] = []
    for study in studies:
        path = args.cache / f"rsna_{study.study_id}.npz"
        if not path.exists():
            np.savez_compressed(path, **rsna_samples(study))
        with np.load(path) as npz:
            d = {k: npz[k] for k in npz.files}
        d["study"] = np.array([study.study_id] * len(d["y"]))
        parts.append(d)
    n_val = args.val_studies
    train = {k: np.concatenate([d[k] for d in parts[:-n_val]]) for k in parts[0]}
    val = {k: np.concatenate([d[k] for d in parts[-n_val:]]) for k in parts[0]}
    ids = [s.study_id for s in studies]
    print(f"data: {len(train['y'])} train / {len(val['y'])} val levels from "
          f"{len(ids)} RSNA studies", flush=True)
    data_card = {
        "summary": RSNA_SUMMARY,
        "training_data_kind": "real",
        "version_suffix": f"-rsna{len(ids)}",
        "training_data": {"source": f"RSNA 2024 format folder {args.rsna}",
                          "studies": len(ids), "level_samples": int(len(train["y"]))},
        "split": {"train": ids[:-n_val], "val": ids[-n_val:], "by": "study"},
        "command": (f"lumbar-node train grader --out {args.out} --rsna {args.rsna} "
                    f"--val-studies {n_val} --epochs {args.epochs}"),
        "calibration_command": (f"lumbar-node train grader --out {args.out} --rsna {args.rsna} "
                                f"--val-studies {n_val} --recalibrate"),
    }
    if args.recalibrate:
        net, card = _load_trained(args.out, device)
        return _calibrate_and_write(args, net, train, val, val, t0, device, data_card, card)
    net = _train(args, train, val, t0, device, rng)
    return _calibrate_and_write(args, net, train, val, val, t0, device, data_card)

"""Seed 000: a slice-based fracture classifier per vertebra, and the seed's comparison.

The seed (DenseNet-121 with GAN augmentation, ``../shared/seeds/000_*.txt``) classifies CT slices
(224 × 224) as fractured or not. Here each complete vertebra of VerSe-layout folders (SynthSpine:
exact labels) gives its mid-sagittal and mid-axial slice (:mod:`VertebralFractureLib.slices`),
"fractured" meaning a Genant grade ≥ 1; a vertebra's probability is the mean over its two slices.
Compared, on the same held-out vertebrae, as in the seed's table:

* ``densenet`` — MONAI's DenseNet-121 (2D, one channel, from scratch: no ImageNet weights can be
  downloaded here), Adam lr 1e-3, batch 32, cross-entropy, rotation / flip / zoom augmentation,
  early stopping on the validation ROC-AUC;
* ``densenet-gan`` — the same with the training set enlarged by a class-conditional GAN
  (:mod:`.slice_gan`) up to balance, as the seed does;
* ``densenet-thin`` — DenseNet-121's layers at a quarter of its width (growth rate 8), the same
  training: the network the product can afford at 0.05 s a vertebra on a CPU;
* ``cnn`` — a small plain CNN (four convolution blocks, no dense connections), the same training;
* ``rf`` — a random forest (scikit-learn) on hand-made histogram, texture and edge features.

Every network sees class-balanced batches. Metrics per vertebra on the held-out set: accuracy,
precision, recall, F1 and ROC-AUC, each with a 95 % bootstrap CI (1,000 resamples), and the
confusion matrix, at the threshold that maximises Youden's J on the validation set.

Usage::

    python -m VertebralFractureLib.training.slice_classifier --train data/seg-synth data/rad-synth-a \\
        --val data/val data/val2 --heldout data/test --models rf cnn densenet --output runs/slices
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.slices import build_network, slice_probabilities
from VertebralFractureLib.training.common import save_npz
from VertebralFractureLib.training.radiomics_classifier import youden_threshold
from VertebralFractureLib.training.slice_features import feature_matrix

#: The classifiers compared, in the order of the seed's table.
MODELS: tuple[str, ...] = ("densenet-gan", "densenet", "densenet-thin", "cnn", "rf")
METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "roc_auc")


# ---------------------------------------------------------------------------------------- data
def collect(roots: Sequence[str | Path], normal_per_case: int | None = None, seed: int = 0,
            cache: str | Path | None = None, log: Any = None) -> dict[str, np.ndarray]:
    """The two slices of every complete vertebra of VerSe-layout folders.

    Args:
        roots: VerSe-layout folders with ``*_genant.json`` truth (SynthSpine output).
        normal_per_case: keep every fractured vertebra and at most this many normal ones per case.
        seed: seed of that choice.
        cache: a folder for one ``.npz`` per root and setting (reused when present).
        log: a stream for progress lines.

    Returns:
        ``{"x": uint8 (n, 2, px, px) (0..255 = the HU window), "y": (n,) 0/1, "grade": (n,),
        "case": (n,) str, "label": (n,)}``.
    """
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.io.verse import list_cases
    from VertebralFractureLib.slices import mask_centres, slices_of
    from VertebralFractureLib.training.radiomics_classifier import chosen_vertebrae

    parts = []
    for root in roots:
        root = Path(root)
        cache_file = None if cache is None else Path(cache) / f"{root.name}-n{normal_per_case}-s{seed}.npz"
        if cache_file is not None and cache_file.exists():
            with np.load(cache_file) as data:
                parts.append(_named_cases({k: data[k] for k in data.files}, root))
            continue
        rng = np.random.default_rng(seed)
        xs, ys, grades, cases, labels = [], [], [], [], []
        found = list_cases(root)
        for k, case in enumerate(found):
            truth, wanted = chosen_vertebrae(case, normal_per_case, rng)
            ct = read_image(case.ct).volume
            centres = mask_centres(read_labelmap(case.vertebra_mask, reference=ct), wanted)
            for lab, s in slices_of(ct, centres).items():
                xs.append(np.round(s * 255).astype(np.uint8))
                ys.append(int(truth[lab]["fractured"]))
                grades.append(int(truth[lab]["grade"] or 0))
                cases.append(case.subject)
                labels.append(lab)
            if log is not None:
                print(f"{root.name} {k + 1}/{len(found)} {case.subject}: {len(centres)} vertebrae", file=log, flush=True)
        part = {"x": np.stack(xs) if xs else np.zeros((0, 2, 1, 1), np.uint8), "y": np.asarray(ys, np.int64),
                "grade": np.asarray(grades, np.int64), "case": np.asarray(cases, str), "label": np.asarray(labels, np.int64)}
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            save_npz(cache_file, **part)
        parts.append(_named_cases(part, root))
    if not parts:
        raise ValueError("no folder given")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _named_cases(part: dict[str, np.ndarray], root: Path) -> dict[str, np.ndarray]:
    """Case names prefixed with their folder (two folders may both hold a ``sub-synth0000``)."""
    return {**part, "case": np.asarray([f"{root.name}/{c}" for c in part["case"]], str)}


def per_slice(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slices as single images: x (2n, px, px) float32 0..1, y (2n,), and the vertebra index of each."""
    x = data["x"].astype(np.float32) / 255.0
    n, v = x.shape[:2]
    return x.reshape(n * v, *x.shape[2:]), np.repeat(data["y"], v), np.repeat(np.arange(n), v)


def per_vertebra(p_slices: np.ndarray, vertebra: np.ndarray, n: int) -> np.ndarray:
    """Mean probability over each vertebra's slices."""
    total = np.bincount(vertebra, weights=p_slices, minlength=n)
    count = np.bincount(vertebra, minlength=n)
    return total / np.maximum(count, 1)


# ---------------------------------------------------------------------------------------- networks
def augment(batch: Any, rng: np.random.Generator, rotate_deg: float = 10.0, zoom: float = 0.1) -> Any:
    """Random rotation (± ``rotate_deg``), zoom (1 ± ``zoom``) and mirror image per slice (torch, N×1×H×W)."""
    import torch
    import torch.nn.functional as F

    n = batch.shape[0]
    theta = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg, n))
    scale = 1.0 / rng.uniform(1 - zoom, 1 + zoom, n)
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    mats = np.zeros((n, 2, 3), np.float32)
    mats[:, 0, 0] = scale * np.cos(theta) * flip
    mats[:, 0, 1] = -scale * np.sin(theta)
    mats[:, 1, 0] = scale * np.sin(theta) * flip
    mats[:, 1, 1] = scale * np.cos(theta)
    grid = F.affine_grid(torch.from_numpy(mats), list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, padding_mode="border", align_corners=False)


def predict(net: Any, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """P(fractured) of each slice (x: n × H × W, 0..1)."""
    return slice_probabilities(net, x, batch=batch)


def train_network(kind: str, x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                  iterations: int = 1000, batch: int = 32, lr: float = 1e-3, eval_every: int = 50,
                  eval_seconds: float | None = 300.0, patience: int = 6,
                  time_budget_s: float | None = None, seed: int = 0, init: str | Path | None = None,
                  log: Any = None) -> tuple[Any, dict[str, Any]]:
    """Train one network on slices ``x`` (n × H × W, 0..1) with labels ``y``, class-balanced batches.

    ``val`` = (slices, labels, vertebra index of each slice, vertebra labels): the validation
    ROC-AUC per vertebra is measured every ``eval_every`` iterations (or once ``eval_seconds`` have
    passed since the last measurement, for slow networks); the best weights are kept and
    training stops after ``patience`` evaluations without improvement (early stopping), at
    ``iterations`` or after ``time_budget_s``.

    Returns:
        The network (best weights) and its history ``{"iterations", "best_iteration",
        "best_val_auc", "seconds", "log": [...]}``.
    """
    import torch
    import torch.nn.functional as F

    from VertebralFractureLib.training.metrics import roc_auc

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_network(kind)
    if init is not None:
        net.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("training needs fractured and normal slices")
    vx, vy, vidx, vlab = val
    best_auc, best_it, best_state, since = -1.0, 0, None, 0
    history: list[dict[str, float]] = []
    start = last_eval = time.time()
    it = 0
    for it in range(1, iterations + 1):
        net.train()
        idx = np.concatenate([rng.choice(pos, batch // 2), rng.choice(neg, batch - batch // 2)])
        xb = augment(torch.from_numpy(x[idx, None]), rng)
        loss = F.cross_entropy(net(xb), torch.from_numpy(y[idx]).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        out_of_time = time_budget_s is not None and time.time() - start > time_budget_s
        due = eval_seconds is not None and time.time() - last_eval >= eval_seconds
        if it % eval_every == 0 or due or it == iterations or out_of_time:
            last_eval = time.time()
            auc = roc_auc(vlab.astype(bool), per_vertebra(predict(net, vx), vidx, len(vlab)))
            history.append({"iteration": it, "loss": round(float(loss.detach()), 4), "val_auc": round(float(auc), 4),
                            "seconds": round(time.time() - start, 1)})
            if log is not None:
                print(f"{kind} it {it}: loss {float(loss.detach()):.3f}, validation ROC-AUC {auc:.3f}, "
                      f"{time.time() - start:.0f} s", file=log, flush=True)
            if auc > best_auc:
                best_auc, best_it, since = float(auc), it, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                since += 1
            if since >= patience or out_of_time:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return net, {"iterations": it, "best_iteration": best_it, "best_val_auc": round(best_auc, 4),
                 "seconds": round(time.time() - start, 1), "log": history}


# ---------------------------------------------------------------------------------------- metrics
def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall (sensitivity), F1 and ROC-AUC at ``threshold`` (NaN where undefined)."""
    from VertebralFractureLib.training.metrics import roc_auc

    y = np.asarray(y, bool)
    pred = np.asarray(p) >= threshold
    tp, fp, fn = int(np.sum(pred & y)), int(np.sum(pred & ~y)), int(np.sum(~pred & y))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else (0.0 if (tp + fp) and (tp + fn) else float("nan"))
    return {"accuracy": float(np.mean(pred == y)) if len(y) else float("nan"), "precision": precision,
            "recall": recall, "f1": f1, "roc_auc": roc_auc(y, p)}


def confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, int]:
    y = np.asarray(y, bool)
    pred = np.asarray(p) >= threshold
    return {"tp": int(np.sum(pred & y)), "fp": int(np.sum(pred & ~y)), "tn": int(np.sum(~pred & ~y)),
            "fn": int(np.sum(~pred & y))}


def bootstrap(y: np.ndarray, p: np.ndarray, threshold: float, n: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Each metric with its 95 % percentile bootstrap CI over ``n`` resamples of the vertebrae, and
    the confusion matrix."""
    from VertebralFractureLib.training.radiomics_classifier import bootstrap_metrics

    out = bootstrap_metrics(y, p, threshold, n, seed, metric_fn=classification_metrics, names=METRICS)
    out["threshold"] = round(float(threshold), 4)
    out["confusion"] = confusion(y, p, threshold)
    return out


# ---------------------------------------------------------------------------------------- real cases
def collect_real(paths: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """The two slices of every complete vertebra of the real cases ``evaluate real`` reads
    (:func:`VertebralFractureLib.training.real.find_cases`): VerSe masks with their CT (centred on
    each mask's centre of mass, grades from ``genant_grades.json``) and hand annotations (centred on
    the annotated body centre, about 10 mm anterior to a mask's centre of mass). ``y`` is 1 for a
    known grade ≥ 1, 0 for grade 0 and -1 where the grade is not known."""
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.slices import slices_of
    from VertebralFractureLib.training.real import find_cases, mask_truth, read_annotation

    cases, _ = find_cases(paths)
    xs, grades, names, labels = [], [], [], []
    for case in cases:
        ct = read_image(case.ct).volume
        if case.kind == "masks":
            truth = mask_truth(read_labelmap(case.truth, ct), case.grades)
        else:
            truth = read_annotation(case.truth)["vertebrae"]
        complete = {lab: t for lab, t in truth.items() if t.complete}
        for lab, s in slices_of(ct, {lab: t.centroid for lab, t in complete.items()}).items():
            xs.append(np.round(s * 255).astype(np.uint8))
            grades.append(-1 if complete[lab].grade is None else int(complete[lab].grade))
            names.append(case.name)
            labels.append(lab)
    if not xs:
        raise ValueError("no complete vertebra in the real cases given")
    g = np.asarray(grades, np.int64)
    return {"x": np.stack(xs), "y": np.where(g < 0, -1, (g >= 1).astype(np.int64)), "grade": g,
            "case": np.asarray(names, str), "label": np.asarray(labels, np.int64)}


def real_summary(data: dict[str, np.ndarray], p: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per scan: do its grade ≥ 2 vertebrae score above all its grade-0 ones (the seed-000 check)?
    ``{"grade2": n, "grade0": n, "lowest_grade2", "highest_grade0", "all_above"}``; ``all_above`` is
    None where the scan lacks either group."""
    out: dict[str, dict[str, Any]] = {}
    for case in dict.fromkeys(data["case"].tolist()):
        m = data["case"] == case
        g, q = data["grade"][m], np.asarray(p)[m]
        hi, lo = q[g >= 2], q[g == 0]
        out[case] = {"grade2": int(len(hi)), "grade0": int(len(lo)),
                     "lowest_grade2": None if not len(hi) else round(float(hi.min()), 4),
                     "highest_grade0": None if not len(lo) else round(float(lo.max()), 4),
                     "all_above": None if not (len(hi) and len(lo)) else bool(hi.min() > lo.max())}
    return out


def score_run(run_dir: str | Path, kinds: Sequence[str], data: dict[str, np.ndarray],
              train: dict[str, np.ndarray] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-vertebra probabilities of a comparison run's networks (``<kind>.pt``) on ``data``; the
    random forest (not saved) is fitted again on ``train`` with the run's seed."""
    import torch

    x, _, idx = per_slice(data)
    out: dict[str, np.ndarray] = {}
    for kind in kinds:
        if kind == "rf":
            if train is None:
                raise ValueError("the random forest needs the training data to be fitted again")
            out[kind] = per_vertebra(_fit_rf(train, seed).predict_proba(feature_matrix(x))[:, 1], idx, len(data["y"]))
            continue
        net = build_network(kind)
        net.load_state_dict(torch.load(Path(run_dir) / f"{kind}.pt", map_location="cpu", weights_only=True))
        out[kind] = per_vertebra(predict(net, x), idx, len(data["y"]))
    return out


def _fit_rf(train: dict[str, np.ndarray], seed: int = 0) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    tx, ty, _ = per_slice(train)
    return RandomForestClassifier(n_estimators=300, min_samples_leaf=2, class_weight="balanced", n_jobs=1,
                                  random_state=seed).fit(feature_matrix(tx), ty)


# ---------------------------------------------------------------------------------------- the comparison
def compare(train: dict[str, np.ndarray], val: dict[str, np.ndarray], heldout: dict[str, np.ndarray],
            models: Sequence[str] = MODELS, output: str | Path | None = None, iterations: int = 1000,
            time_budget_s: float | None = None, gan_budget_s: float | None = None, seed: int = 0,
            log: Any = None, real: dict[str, np.ndarray] | None = None,
            init: str | Path | None = None, patience: int = 6) -> dict[str, Any]:
    """Train each of ``models`` on ``train``, choose its threshold on ``val`` and score ``heldout``
    (and, given, the ``real`` cases of :func:`collect_real`: :func:`real_summary` per scan). With
    ``init`` (an earlier run's folder), each network starts from that run's ``<model>.pt`` where it
    exists, so that training adds up.

    Returns the report: per model its history, validation threshold and held-out metrics with CIs
    (and the GAN's report for ``densenet-gan``); with ``output``, also ``report.json``, the
    per-vertebra predictions (``predictions.csv``, ``real_predictions.csv``) and the network
    weights (``<model>.pt``).
    """
    import torch

    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {MODELS}")
    out_dir = Path(output) if output is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    tx, ty, _ = per_slice(train)
    vx, vy, vidx = per_slice(val)
    hx, hy, hidx = per_slice(heldout)
    report: dict[str, Any] = {"train": _counts(train), "validation": _counts(val), "heldout": _counts(heldout),
                              "models": {}}
    predictions: dict[str, np.ndarray] = {}
    real_predictions: dict[str, np.ndarray] = {}
    rx, _, ridx = per_slice(real) if real is not None else (None, None, None)
    for kind in models:
        entry: dict[str, Any] = {}
        if kind == "rf":
            start = time.time()
            rf = _fit_rf(train, seed)
            pv = per_vertebra(rf.predict_proba(feature_matrix(vx))[:, 1], vidx, len(val["y"]))
            ph = per_vertebra(rf.predict_proba(feature_matrix(hx))[:, 1], hidx, len(heldout["y"]))
            if real is not None:
                real_predictions[kind] = per_vertebra(rf.predict_proba(feature_matrix(rx))[:, 1], ridx, len(real["y"]))
            entry["seconds"] = round(time.time() - start, 1)
        else:
            x, y = tx, ty
            if kind == "densenet-gan":
                from VertebralFractureLib.training.slice_gan import balance_with_gan

                x, y, entry["gan"] = balance_with_gan(tx, ty, time_budget_s=gan_budget_s, seed=seed, log=log,
                                                      figure=None if out_dir is None else out_dir / "gan_slices.png")
            start_from = None if init is None or not (Path(init) / f"{kind}.pt").exists() else Path(init) / f"{kind}.pt"
            net, entry["training"] = train_network(kind, x, y, (vx, vy, vidx, val["y"]), iterations=iterations,
                                                   time_budget_s=time_budget_s, seed=seed, log=log, init=start_from,
                                                   patience=patience)
            entry["training"]["from"] = "scratch" if start_from is None else str(start_from)
            pv = per_vertebra(predict(net, vx), vidx, len(val["y"]))
            ph = per_vertebra(predict(net, hx), hidx, len(heldout["y"]))
            if real is not None:
                real_predictions[kind] = per_vertebra(predict(net, rx), ridx, len(real["y"]))
            if out_dir is not None:
                torch.save(net.state_dict(), out_dir / f"{kind}.pt")
        threshold = youden_threshold(val["y"], pv)
        entry["validation"] = bootstrap(val["y"], pv, threshold, n=200, seed=seed)
        entry["heldout"] = bootstrap(heldout["y"], ph, threshold, seed=seed)
        if real is not None:
            entry["real"] = real_summary(real, real_predictions[kind])
        report["models"][kind] = entry
        predictions[kind] = ph
        if log is not None:
            h = entry["heldout"]
            print(f"{kind}: held-out ROC-AUC {h['roc_auc']['value']:.3f} {h['roc_auc']['ci95']}, "
                  f"accuracy {h['accuracy']['value']:.3f}", file=log, flush=True)
        if out_dir is not None:  # after every model: a long run stopped halfway keeps what it finished
            (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            _write_predictions(out_dir / "predictions.csv", heldout, predictions)
            if real is not None:
                _write_predictions(out_dir / "real_predictions.csv", real, real_predictions)
    return report


def _counts(data: dict[str, np.ndarray]) -> dict[str, int]:
    return {"vertebrae": int(len(data["y"])), "fractured": int(np.sum(data["y"])),
            "cases": int(len(np.unique(data["case"])))}


def _write_predictions(path: Path, data: dict[str, np.ndarray], predictions: dict[str, np.ndarray]) -> None:
    import csv

    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["case", "label", "grade", "fractured", *predictions])
        for k in range(len(data["y"])):
            w.writerow([data["case"][k], int(data["label"][k]), int(data["grade"][k]), int(data["y"][k]),
                        *(f"{predictions[m][k]:.4f}" for m in predictions)])


def table(report: dict[str, Any]) -> str:
    """The seed's comparison table (held-out, per vertebra) as Markdown."""
    head = "| model | " + " | ".join(METRICS) + " | confusion (tp fp tn fn) | threshold |"
    lines = [head, "|" + " --- |" * (len(METRICS) + 3)]
    for kind, entry in report["models"].items():
        h = entry["heldout"]
        cells = [f"{h[m]['value']:.3f} [{h[m]['ci95'][0]:.3f}, {h[m]['ci95'][1]:.3f}]" for m in METRICS]
        c = h["confusion"]
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {c['tp']} {c['fp']} {c['tn']} {c['fn']} | {h['threshold']:.3f} |")
    return "\n".join(lines)


def real_table(report: dict[str, Any]) -> str:
    """Per model and real scan: the lowest grade-≥2 and the highest grade-0 probability (Markdown)."""
    lines = ["| model | scan | grade ≥ 2 | grade 0 | lowest grade ≥ 2 | highest grade 0 | all above |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for kind, entry in report["models"].items():
        for case, r in entry.get("real", {}).items():
            lines.append(f"| {kind} | {case} | {r['grade2']} | {r['grade0']} | {_fmt(r['lowest_grade2'])} | "
                         f"{_fmt(r['highest_grade0'])} | {'–' if r['all_above'] is None else ('yes' if r['all_above'] else 'no')} |")
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def install(kind: str, run_dir: str | Path, report: dict[str, Any], train_roots: Sequence[str | Path],
            directory: str | Path | None = None, ledger: Sequence[dict[str, Any]] = ()) -> Path:
    """Install the network ``kind`` of a comparison run as the ``slice-classifier`` model.

    The weights are stored in half precision (DenseNet-121 in single precision would pass the 25 MB
    limit; they are loaded back into a single-precision network), with a card holding the
    architecture, the slice geometry, the validation threshold, the held-out metrics and the
    training ledger.
    """
    import datetime

    from VertebralFractureLib.slices import FIELD_MM, HU_WINDOW, MODEL_NAME, NETWORK_TYPES, SLICE_PX
    from VertebralFractureLib.training.install import half_precision_copy, install_model

    if kind not in report["models"] or kind == "rf":
        raise ValueError(f"no network {kind!r} in this run (the random forest is not installed)")
    entry = report["models"][kind]
    tmp = half_precision_copy(Path(run_dir) / f"{kind}.pt")
    h, t = entry["heldout"], entry["training"]
    card = {
        "version": datetime.date.today().strftime("%Y%m%d"),
        "architecture": {"type": NETWORK_TYPES[kind], "px": SLICE_PX,
                         "field_mm": FIELD_MM, "hu_window": list(HU_WINDOW), "gan_augmented": kind == "densenet-gan"},
        "classes": ["normal", "fractured"],
        "training_data": (f"SynthSpine {', '.join(Path(r).name for r in train_roots)}: {report['train']['vertebrae']} "
                          f"complete vertebrae ({report['train']['fractured']} fractured, Genant grade >= 1), "
                          "their mid-sagittal and mid-axial slices"),
        "postprocess": {"threshold": h["threshold"], "why": "Youden's J on the validation vertebrae"},
        "metrics": {"heldout_synthetic": h, "validation": entry["validation"]},
        "ledger": [*ledger, {"run": Path(run_dir).name, "from": t.get("from", "scratch"), "iterations": t["iterations"],
                             "best_iteration": t["best_iteration"], "wall_time_min": round(t["seconds"] / 60, 1),
                             "hardware": "2-core CPU, one thread"}],
        "accuracy": (f"The slice classifier (seed 000) is trained on synthetic CT only; on held-out synthetic "
                     f"vertebrae its ROC-AUC is {h['roc_auc']['value']:.2f} "
                     f"({h['roc_auc']['ci95'][0]:.2f}-{h['roc_auc']['ci95'][1]:.2f}). It is a research second "
                     "opinion and changes no call."),
    }
    try:
        return install_model(MODEL_NAME, tmp, card, directory)
    finally:
        tmp.unlink(missing_ok=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m VertebralFractureLib.training.slice_classifier",
                                description="Seed 000: slice classifiers per vertebra (DenseNet-121 with and "
                                            "without GAN images, a plain CNN, a random forest), compared.")
    p.add_argument("--train", nargs="+", required=True, type=Path, help="VerSe-layout training folders")
    p.add_argument("--val", nargs="+", required=True, type=Path, help="validation folders (thresholds, early stopping)")
    p.add_argument("--heldout", nargs="+", required=True, type=Path, help="held-out folders, used for nothing else")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--normal-per-case", type=int, default=None,
                   help="keep at most this many normal vertebrae per training case (all fractured ones are kept)")
    p.add_argument("--iterations", type=int, default=1000, help="per network (batches of 32)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds per network")
    p.add_argument("--patience", type=int, default=6,
                   help="validation measurements without improvement before a network stops early")
    p.add_argument("--gan-time-budget", type=float, default=None, help="seconds for the GAN")
    p.add_argument("--cache", type=Path, default=None, help="folder for the extracted slices")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real", nargs="+", type=Path, default=None,
                   help="real cases to score as evaluate real reads them (VerSe masks with CT and grades, "
                        "body-centre annotations): do grade >= 2 vertebrae score above grade-0 ones, per scan?")
    p.add_argument("--init", type=Path, default=None,
                   help="an earlier run's folder: each network starts from its <model>.pt there (training adds up)")
    p.add_argument("--install", default=None, choices=[m for m in MODELS if m != "rf"],
                   help="install this network of the run into Resources/Models as the slice-classifier model")
    p.add_argument("-o", "--output", type=Path, required=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    train = collect(args.train, args.normal_per_case, args.seed, args.cache, log=sys.stderr)
    val = collect(args.val, None, args.seed, args.cache, log=sys.stderr)
    heldout = collect(args.heldout, None, args.seed, args.cache, log=sys.stderr)
    real = collect_real(args.real) if args.real else None
    report = compare(train, val, heldout, args.models, args.output, args.iterations, args.time_budget,
                     args.gan_time_budget, args.seed, log=sys.stderr, real=real, init=args.init,
                     patience=args.patience)
    print(table(report))
    if real is not None:
        print()
        print(real_table(report))
    if args.install is not None:
        print(f"installed {install(args.install, args.output, report, args.train)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

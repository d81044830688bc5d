"""Training and evaluating the radiograph classifiers (:mod:`VertebralFractureLib.radiograph_classify`).

Two tasks on folders written by :mod:`.radiograph_data` (synthetic lateral radiographs with exact
labels):

* ``vertebra`` (seed 004): each L1–L5 body, cropped from its true box (moved and scaled a little,
  as a detector's box would be), normal / old / fresh; ResNet-50, DenseNet-161 and ResNeXt-50
  (thin) are trained one after the other and their summed probabilities form the ensemble.
  Batches hold normal, old and fresh crops in the ratio 2 : 1 : 1 (the fractures are rare).
  Augmentation as the seed's: scale, rotation, brightness, contrast; plus a mirror image and noise.
* ``fresh`` (seed 003): the whole radiograph at 224 × 224 (horizontal flips), fresh vertebral
  compression fracture in view or not; ResNet-101 compared with ResNet-50.

Each network keeps the checkpoint with the best validation score (balanced accuracy, or ROC-AUC for
``fresh``); the held-out folder is scored once at the end, with 1,000-sample bootstrap CIs, and
used for nothing else. ``--install`` puts the networks into ``Resources/Models`` with their cards
(``--init`` resumes from installed weights, so that training adds up).

Usage::

    python -m VertebralFractureLib.training.radiograph_classifier vertebra --train data/radiographs-train \\
        --val data/radiographs-val --heldout data/radiographs-test -o runs/rad-cls --time-budget 900
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from VertebralFractureLib.radiograph_classify import (
    CLASSES,
    CROP_SHAPE,
    ENSEMBLE,
    FRESH_KINDS,
    FRESH_MODEL,
    build_network,
    crop_vertebra,
    ensemble,
    model_name,
    whole_input,
)
from VertebralFractureLib.radiograph_detect import LEVELS

#: Sampling weights of normal, old and fresh crops in a training batch.
CLASS_MIX = (0.5, 0.25, 0.25)


# ---------------------------------------------------------------------------------------- samples
def vertebra_samples(entries: Sequence[dict[str, Any]], levels: Sequence[str] = LEVELS) -> list[dict[str, Any]]:
    """The vertebrae of ``levels`` (default L1–L5) of dataset entries with a known class: entry
    index, box, class index."""
    out = []
    for k, e in enumerate(entries):
        for v in e["vertebrae"]:
            if v["name"] in levels and v.get("class") in CLASSES:
                out.append({"entry": k, "box": v["box_px"], "y": CLASSES.index(v["class"]), "name": v["name"],
                            "grade": v.get("grade"), "case": e.get("case")})
    return out


def _jitter_box(box: Sequence[float], rng: np.random.Generator) -> list[float]:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + rng.normal(0, 0.05) * w, (y0 + y1) / 2 + rng.normal(0, 0.05) * h
    w, h = w * rng.uniform(0.9, 1.12), h * rng.uniform(0.9, 1.12)
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def augment_crop(image: np.ndarray, box: Sequence[float], rng: np.random.Generator,
                 pixel_mm: float | None = None) -> np.ndarray:
    """One training crop: jittered box, noise and contrast before the histogram flattening, then
    rotation (±10°), brightness and contrast (seed 004's augmentation) and a mirror image."""
    from scipy import ndimage

    img = np.clip(image, 0, 1) ** rng.uniform(0.7, 1.4)
    img = img + rng.normal(0, rng.uniform(0, 0.02), img.shape).astype(np.float32)
    crop, _ = crop_vertebra(img, _jitter_box(box, rng), pixel_mm=pixel_mm)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    angle = rng.uniform(-10, 10)
    crop = ndimage.rotate(crop, angle, reshape=False, order=1, mode="constant", cval=0.0)
    crop = crop * rng.uniform(0.85, 1.15) + rng.uniform(-0.08, 0.08)
    return np.ascontiguousarray(crop, np.float32)


def eval_crops(entries: Sequence[dict[str, Any]], samples: Sequence[dict[str, Any]]) -> np.ndarray:
    """Crops of ``samples`` from their true boxes, unaugmented."""
    return np.stack([crop_vertebra(entries[s["entry"]]["image"], s["box"], pixel_mm=entries[s["entry"]]["pixel_mm"])[0]
                     for s in samples]) if samples else \
        np.zeros((0, *CROP_SHAPE), np.float32)


def augment_whole(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Seed 003's training input: the whole radiograph, mirrored half of the time, with contrast,
    brightness and noise."""
    img = image[:, ::-1] if rng.random() < 0.5 else image
    img = np.clip(img, 0, 1) ** rng.uniform(0.7, 1.4) * rng.uniform(0.85, 1.15) + rng.uniform(-0.08, 0.08)
    x = whole_input(np.asarray(img, np.float32))
    return x + rng.normal(0, rng.uniform(0, 0.02), x.shape).astype(np.float32)


# ---------------------------------------------------------------------------------------- metrics
def class_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class sensitivity, fractured-vs-normal ROC-AUC, confusion."""
    from VertebralFractureLib.training.metrics import roc_auc

    pred = np.argmax(prob, axis=1)
    sens = {c: (float(np.mean(pred[y == k] == k)) if np.any(y == k) else None) for k, c in enumerate(CLASSES)}
    present = [v for v in sens.values() if v is not None]
    fractured = (y > 0).astype(int)
    auc = roc_auc(fractured, 1.0 - prob[:, 0]) if 0 < fractured.sum() < len(y) else None
    confusion = [[int(np.sum((y == a) & (pred == b))) for b in range(len(CLASSES))] for a in range(len(CLASSES))]
    return {"n": int(len(y)), "accuracy": float(np.mean(pred == y)) if len(y) else None,
            "balanced_accuracy": float(np.mean(present)) if present else None, "sensitivity": sens,
            "fractured_auc": auc, "confusion": confusion}


def bootstrap_ci(y: np.ndarray, score: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float | None],
                 n: int = 1000, seed: int = 0) -> list[float] | None:
    """95 % percentile interval of ``metric`` over ``n`` bootstrap resamples."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        v = metric(y[idx], score[idx])
        if v is not None and np.isfinite(v):
            vals.append(v)
    return [round(float(np.percentile(vals, 2.5)), 4), round(float(np.percentile(vals, 97.5)), 4)] if vals else None


def with_cis(y: np.ndarray, prob: np.ndarray, n: int = 1000) -> dict[str, Any]:
    """:func:`class_metrics` with bootstrap CIs of accuracy, balanced accuracy, the per-class
    sensitivities and the fractured ROC-AUC."""
    m = class_metrics(y, prob)
    m["ci95"] = {
        "accuracy": bootstrap_ci(y, prob, lambda a, b: class_metrics(a, b)["accuracy"], n),
        "balanced_accuracy": bootstrap_ci(y, prob, lambda a, b: class_metrics(a, b)["balanced_accuracy"], n),
        "fractured_auc": bootstrap_ci(y, prob, lambda a, b: class_metrics(a, b)["fractured_auc"], n),
        **{f"sensitivity_{c}": bootstrap_ci(y, prob, lambda a, b, c=c: class_metrics(a, b)["sensitivity"][c], n)
           for c in CLASSES},
    }
    return m


def choose_fracture_threshold(y: np.ndarray, prob: np.ndarray, specificity: float = 0.95) -> float:
    """The lowest threshold on 1 − P(normal) at which at least ``specificity`` of the normal
    vertebrae of (validation) data are not called fractured."""
    normal = np.sort(1.0 - np.asarray(prob)[np.asarray(y) == 0, 0])
    if not len(normal):
        return 0.5
    k = int(np.ceil(specificity * len(normal))) - 1
    return float(np.nextafter(normal[min(k, len(normal) - 1)], 1.0))


def decision_metrics(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, Any]:
    """:func:`class_metrics` of the thresholded decision (:func:`..radiograph_classify.decide`), with
    the fractured-or-not sensitivity and specificity."""
    from VertebralFractureLib.radiograph_classify import decide

    pred = decide(prob, threshold)
    onehot = np.eye(len(CLASSES))[pred]
    m = class_metrics(y, onehot)
    m.pop("fractured_auc")
    m["fractured_sensitivity"] = float(np.mean(pred[y > 0] > 0)) if np.any(y > 0) else None
    m["normal_specificity"] = float(np.mean(pred[y == 0] == 0)) if np.any(y == 0) else None
    m["threshold"] = threshold
    return m


def auc_with_ci(y: np.ndarray, score: np.ndarray, n: int = 1000) -> dict[str, Any]:
    """ROC-AUC with its bootstrap CI (seed 003's measure)."""
    from VertebralFractureLib.training.metrics import roc_auc

    def f(a: np.ndarray, b: np.ndarray) -> float | None:
        return roc_auc(a, b) if 0 < a.sum() < len(a) else None

    return {"value": f(y, score), "ci95": bootstrap_ci(y, score, f, n), "n": int(len(y)), "positive": int(y.sum())}


# ---------------------------------------------------------------------------------------- training
def _fit(kind: str, num_classes: int, next_batch: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]],
         validate: Callable[[Any], float], out: Path, iterations: int, lr: float, time_budget_s: float | None,
         eval_every: int, seed: int, init: str | Path | None, log: Any) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_network(kind, num_classes)
    if init is not None:
        state = torch.load(init, map_location="cpu", weights_only=True)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    start, best, best_it, history, it = time.time(), -1.0, 0, [], 0
    for it in range(1, iterations + 1):
        net.train()
        x, y = next_batch(rng)
        for group in opt.param_groups:
            group["lr"] = lr * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * it / iterations)))
        logits = net(torch.from_numpy(x)[:, None])
        if num_classes == 1:
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], torch.from_numpy(y).float())
        else:
            loss = F.cross_entropy(logits, torch.from_numpy(y).long(), label_smoothing=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out_of_time = time_budget_s is not None and time.time() - start > time_budget_s
        if it % eval_every == 0 or it == iterations or out_of_time:
            net.eval()  # batch normalisation with its running statistics, as at inference
            score = validate(net)
            history.append({"iteration": it, "loss": round(float(loss.detach()), 4), "val": round(score, 4),
                            "seconds": round(time.time() - start, 1)})
            if log is not None:
                print(f"{kind} it {it}: loss {float(loss.detach()):.3f}, validation {score:.3f}, "
                      f"{time.time() - start:.0f} s", file=log, flush=True)
            if score > best:
                best, best_it = score, it
                torch.save(net.state_dict(), out / f"{kind}.pt")
        if out_of_time:
            break
    return {"iterations": it, "best_iteration": best_it, "best_validation": round(best, 4),
            "seconds": round(time.time() - start, 1), "from": "scratch" if init is None else str(init), "log": history}


def _load(kind: str, path: Path, num_classes: int) -> Any:
    import torch

    net = build_network(kind, num_classes)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def _predict(net: Any, x: np.ndarray, batch: int = 32) -> np.ndarray:
    import torch

    outs = []
    with torch.inference_mode():
        for k in range(0, len(x), batch):
            outs.append(net(torch.from_numpy(np.ascontiguousarray(x[k:k + batch]))[:, None]).float().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 1))


def _softmax(z: np.ndarray) -> np.ndarray:
    from scipy.special import softmax

    return softmax(z, axis=1)


def train_vertebra(train_entries: Sequence[dict[str, Any]], val_entries: Sequence[dict[str, Any]],
                   held_entries: Sequence[dict[str, Any]], output: str | Path, kinds: Sequence[str] = ENSEMBLE,
                   iterations: int = 1500, batch: int = 16, lr: float = 1e-3, time_budget_s: float | None = None,
                   eval_every: int = 100, seed: int = 0, init: dict[str, Path] | None = None,
                   log: Any = None, levels: Sequence[str] = LEVELS) -> dict[str, Any]:
    """Seed 004's three networks, one after the other (``time_budget_s`` each), then the ensemble;
    writes ``<kind>.pt`` and ``report.json`` in ``output`` (after every network).

    ``levels``: the vertebrae trained on and selected on (validation); with thoracic levels added
    (the image's fresh-VCF score can also look above L1, :mod:`.radiograph_analysis`) the held-out
    measures stay those of L1–L5 (seed 004's), and ``heldout_other_levels`` reports the others."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    tr = vertebra_samples(train_entries, levels)
    by_class = [[s for s in tr if s["y"] == k] for k in range(len(CLASSES))]
    if any(not c for c in by_class):
        raise ValueError("training data must hold normal, old and fresh vertebrae")
    va, he = vertebra_samples(val_entries, levels), vertebra_samples(held_entries)
    other = [lv for lv in levels if lv not in LEVELS]
    ho = vertebra_samples(held_entries, other) if other else []
    xo, yo = eval_crops(held_entries, ho), np.array([s["y"] for s in ho])
    xv, yv = eval_crops(val_entries, va), np.array([s["y"] for s in va])
    xh, yh = eval_crops(held_entries, he), np.array([s["y"] for s in he])
    mix = np.asarray(CLASS_MIX) / sum(CLASS_MIX)

    def next_batch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        classes = rng.choice(len(CLASSES), size=batch, p=mix)
        picks = [by_class[c][int(rng.integers(len(by_class[c])))] for c in classes]
        x = np.stack([augment_crop(train_entries[s["entry"]]["image"], s["box"], rng, train_entries[s["entry"]]["pixel_mm"])
                      for s in picks])
        return x, classes

    def validate(net: Any) -> float:
        return float(class_metrics(yv, _softmax(_predict(net, xv)))["balanced_accuracy"])

    counts = {c: len(by_class[k]) for k, c in enumerate(CLASSES)}
    report: dict[str, Any] = {"task": "vertebra", "levels": list(levels),
                              "train": {"images": len(train_entries), "vertebrae": counts},
                              "validation": {"images": len(val_entries), "vertebrae": len(va)},
                              "heldout": {"images": len(held_entries), "vertebrae": len(he),
                                          "counts": {c: int(np.sum(yh == k)) for k, c in enumerate(CLASSES)}},
                              "models": {}}
    probs_v, probs_h, probs_o = {}, {}, {}
    for kind in kinds:
        training = _fit(kind, len(CLASSES), next_batch, validate, out, iterations, lr, time_budget_s, eval_every,
                        seed, (init or {}).get(kind), log)
        net = _load(kind, out / f"{kind}.pt", len(CLASSES))
        probs_v[kind], probs_h[kind] = _softmax(_predict(net, xv)), _softmax(_predict(net, xh))
        if len(yo):
            probs_o[kind] = _softmax(_predict(net, xo))
        report["models"][kind] = {"training": training, "validation": class_metrics(yv, probs_v[kind]),
                                  "heldout": with_cis(yh, probs_h[kind])}
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if len(probs_h) > 1:
        threshold = choose_fracture_threshold(yv, ensemble(probs_v))
        report["ensemble"] = {"members": list(probs_h), "validation": class_metrics(yv, ensemble(probs_v)),
                              "heldout": with_cis(yh, ensemble(probs_h)), "fracture_threshold": threshold,
                              "heldout_decision": decision_metrics(yh, ensemble(probs_h), threshold)}
        if probs_o:
            report["ensemble"]["heldout_other_levels"] = {"levels": other, **with_cis(yo, ensemble(probs_o))}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def train_fresh(train_entries: Sequence[dict[str, Any]], val_entries: Sequence[dict[str, Any]],
                held_entries: Sequence[dict[str, Any]], output: str | Path, kinds: Sequence[str] = FRESH_KINDS,
                iterations: int = 800, batch: int = 8, lr: float = 1e-3, time_budget_s: float | None = None,
                eval_every: int = 50, seed: int = 0, init: dict[str, Path] | None = None,
                log: Any = None) -> dict[str, Any]:
    """Seed 003: fresh VCF in view or not, on whole radiographs; ResNet-101 and ResNet-50."""
    from VertebralFractureLib.training.metrics import roc_auc

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    y_tr = np.array([bool(e["fresh_vcf"]) for e in train_entries])
    pos, neg = np.flatnonzero(y_tr), np.flatnonzero(~y_tr)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("training data must hold radiographs with and without a fresh fracture")
    xv = np.stack([whole_input(e["image"]) for e in val_entries])
    yv = np.array([int(e["fresh_vcf"]) for e in val_entries])
    xh = np.stack([whole_input(e["image"]) for e in held_entries])
    yh = np.array([int(e["fresh_vcf"]) for e in held_entries])

    def next_batch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.random(batch) < 0.5
        idx = [int(rng.choice(pos)) if lab else int(rng.choice(neg)) for lab in labels]
        return np.stack([augment_whole(train_entries[i]["image"], rng) for i in idx]), labels.astype(np.float32)

    def validate(net: Any) -> float:
        return float(roc_auc(yv, _predict(net, xv)[:, 0]))

    report: dict[str, Any] = {"task": "fresh", "train": {"images": len(train_entries), "fresh_vcf": int(len(pos))},
                              "validation": {"images": len(val_entries), "fresh_vcf": int(yv.sum())},
                              "heldout": {"images": len(held_entries), "fresh_vcf": int(yh.sum())}, "models": {}}
    for kind in kinds:
        training = _fit(kind, 1, next_batch, validate, out, iterations, lr, time_budget_s, eval_every, seed,
                        (init or {}).get(kind), log)
        net = _load(kind, out / f"{kind}.pt", 1)
        from scipy.special import expit

        score = expit(_predict(net, xh)[:, 0])
        report["models"][kind] = {"training": training, "validation_auc": training["best_validation"],
                                  "heldout": auc_with_ci(yh, score)}
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


# ---------------------------------------------------------------------------------------- install
def _level_span(levels: Sequence[str]) -> str:
    """``T10-L5`` for a run of levels, written as the card says which crops trained a network."""
    return f"{levels[0]}-{levels[-1]}" if len(levels) > 1 else str(levels[0])


def install(run_dir: str | Path, report: dict[str, Any], train_roots: Sequence[str | Path],
            directory: str | Path | None = None, ledger: dict[str, Sequence[dict[str, Any]]] | None = None) -> list[Path]:
    """Install a run's networks (half precision) with their cards: ``radiograph-<kind>`` for the
    vertebra task, ``radiograph-fresh-vcf`` for the fresh task (of its networks, the one with the better
    validation ROC-AUC; the held-out numbers of both go on the card).

    Each card's ledger lists the earlier runs a network continues — ``ledger[kind]``, by default the
    installed card's ledger when the network was resumed from weights (none when trained from
    scratch) — and then this run. What else the installed vertebra card decides after the
    networks (``postprocess.placed_levels`` and its reason) stays as it was."""
    import datetime

    from VertebralFractureLib.radiograph_classify import WHOLE_SIZE
    from VertebralFractureLib.training.install import half_precision_copy, install_model, installed_entry

    run_dir = Path(run_dir)
    data = ", ".join(Path(r).name for r in train_roots)
    installed = []
    kinds = list(report["models"]) if report["task"] == "vertebra" else \
        [max(report["models"], key=lambda k: report["models"][k]["validation_auc"])]  # the better on validation
    for kind in kinds:
        entry = report["models"][kind]
        t = entry["training"]
        name = model_name(kind) if report["task"] == "vertebra" else FRESH_MODEL
        previous = installed_entry(name, directory)  # the card this network replaces (empty if none)
        run = {"run": t.get("run", run_dir.name), "from": t["from"], "iterations": t["iterations"],
               "best_iteration": t["best_iteration"],
               "wall_time_min": round(t["seconds"] / 60, 1), "hardware": "2-core CPU, one thread"}
        if report["task"] == "vertebra":
            h = entry["heldout"]
            ens = report.get("ensemble", {})
            card = {"architecture": {"type": kind, "input": list(CROP_SHAPE), "classes": list(CLASSES),
                                     "levels": list(report.get("levels", LEVELS))},
                    "postprocess": {"fracture_threshold": ens.get("fracture_threshold"),
                                    "why": "the ensemble calls a vertebra fractured when 1 - P(normal) reaches this: "
                                           "95 % of the validation normal vertebrae stay below it"},
                    "classes": list(CLASSES),
                    "training_data": (f"{_level_span(report.get('levels', LEVELS))} crops of synthetic lateral "
                                      f"radiographs reconstructed from SynthSpine CT ({data}; {report['train']['vertebrae']})"),
                    "metrics": {"heldout_synthetic": h, "ensemble_heldout_synthetic": ens.get("heldout"),
                                "ensemble_decision_heldout_synthetic": ens.get("heldout_decision"),
                                **({"ensemble_heldout_synthetic_other_levels": ens["heldout_other_levels"]}
                                   if "heldout_other_levels" in ens else {})},
                    "accuracy": (f"Trained on synthetic radiographs only; on held-out synthetic vertebrae its "
                                 f"three-class accuracy is {h['accuracy']:.2f} and its fractured-vs-normal ROC-AUC "
                                 f"{h['fractured_auc'] or float('nan'):.2f}. Not measured on real radiographs; "
                                 "docs/radiographs.md shows it on radiographs reconstructed from real CT.")}
            kept = {k: v for k, v in previous.get("postprocess", {}).items() if k.startswith("placed_levels")}
            card["postprocess"].update(kept)
        else:
            h = entry["heldout"]
            card = {"architecture": {"type": kind, "input": [WHOLE_SIZE, WHOLE_SIZE]}, "classes": ["no fresh VCF", "fresh VCF"],
                    "training_data": f"whole synthetic lateral radiographs reconstructed from SynthSpine CT ({data}; "
                                     f"{report['train']['images']} images, {report['train']['fresh_vcf']} with a fresh fracture)",
                    "metrics": {"heldout_synthetic_auc": h, "compared": {k: v["heldout"] for k, v in report["models"].items()}},
                    "accuracy": (f"Trained on synthetic radiographs only; held-out synthetic ROC-AUC {h['value']:.2f} "
                                 f"({h['ci95'][0]:.2f}-{h['ci95'][1]:.2f}). Fresh and old fractures are told apart on "
                                 "synthetic images only; no real radiograph with a known fracture age was available.")}
        card["version"] = datetime.date.today().strftime("%Y%m%d")
        earlier = (ledger[kind] if ledger is not None and kind in ledger else
                   [] if t["from"] == "scratch" else list(previous.get("ledger", [])))
        card["ledger"] = [*earlier, run]
        tmp = half_precision_copy(run_dir / f"{kind}.pt")
        try:
            installed.append(install_model(name, tmp, card, directory))
        finally:
            tmp.unlink(missing_ok=True)
    return installed


def main(argv: Sequence[str] | None = None) -> int:
    from VertebralFractureLib.training.radiograph_data import read_dataset

    p = argparse.ArgumentParser(prog="python -m VertebralFractureLib.training.radiograph_classifier",
                                description="Train the radiograph classifiers (seed 004 vertebrae, seed 003 fresh VCF).")
    p.add_argument("task", choices=["vertebra", "fresh"])
    p.add_argument("--train", nargs="+", type=Path, required=True, help="folders written by radiograph_data")
    p.add_argument("--val", nargs="+", type=Path, required=True)
    p.add_argument("--heldout", nargs="+", type=Path, required=True)
    p.add_argument("--models", nargs="+", default=None, help="networks (default: the seed's)")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay)")
    p.add_argument("--time-budget", type=float, default=None, help="seconds per network")
    p.add_argument("--init", nargs="*", default=[], metavar="KIND=WEIGHTS", help="resume a network from weights")
    p.add_argument("--levels", nargs="+", default=None,
                   help="vertebra: levels trained and selected on (default L1-L5; e.g. T11 T12 L1 L2 L3 L4 L5)")
    p.add_argument("--install", action="store_true", help="install the networks with their cards")
    p.add_argument("-o", "--output", type=Path, required=True)
    args = p.parse_args(argv)
    tr = [e for f in args.train for e in read_dataset(f)]
    va = [e for f in args.val for e in read_dataset(f)]
    he = [e for f in args.heldout for e in read_dataset(f)]
    init = {k: Path(v) for k, v in (s.split("=", 1) for s in args.init)}
    opts: dict[str, Any] = {"time_budget_s": args.time_budget, "init": init, "log": sys.stderr, "lr": args.lr}
    if args.models:
        opts["kinds"] = args.models
    if args.iterations:
        opts["iterations"] = args.iterations
    if args.batch:
        opts["batch"] = args.batch
    if args.levels:
        if args.task != "vertebra":
            p.error("--levels applies to the vertebra networks")
        opts["levels"] = tuple(args.levels)
    fit = train_vertebra if args.task == "vertebra" else train_fresh
    report = fit(tr, va, he, args.output, **opts)
    summary = {k: v["heldout"] for k, v in report["models"].items()}
    if "ensemble" in report:
        summary["ensemble"] = report["ensemble"]["heldout"]
    print(json.dumps(summary, indent=1, default=str))
    if args.install:
        for path in install(args.output, report, args.train):
            print(f"installed {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

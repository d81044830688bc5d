"""Training the radiomics fracture classifier (seed 001): features, LASSO path, classifiers, metrics.

1. Features of every complete vertebra of VerSe-layout folders (SynthSpine), with its true status
   (fractured = Genant grade ≥ 1), cached per case as JSON so an interrupted run resumes.
2. The seed's log-lambda selection: an L1-regularised (LASSO) logistic regression over log-spaced
   λ = 1/C, each scored by stratified cross-validated ROC-AUC; the features with a non-zero
   coefficient at the best λ are kept.
3. Logistic regression, a random forest and a small neural network (MLP) on the selected,
   standardised features are compared by cross-validated ROC-AUC on the training set; the best is
   shipped (the simpler one when within 0.01), with the threshold that maximises Youden's J on
   its out-of-fold probabilities.
4. Metrics on held-out folders: ROC-AUC, accuracy, sensitivity, specificity, each with a 95 %
   bootstrap CI (1000 resamples of vertebrae), for every candidate.

The shipped model is plain JSON (:class:`~VertebralFractureLib.radiomics.RadiomicsClassifier`),
registered with its sha256 in ``models.json``. Run::

    python -m VertebralFractureLib.training.radiomics_classifier \\
        --train /data/segtrain /data/segtrain2 --heldout /data/segval /data/test \\
        --normal-per-case 5 --wiener 3 --cache /tmp/radiomics-cache --output /tmp/radiomics-run --install
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

from VertebralFractureLib.radiomics import (
    MODEL_NAME,
    RadiomicsClassifier,
    extract_features,
    load_params,
)
from VertebralFractureLib.training.metrics import roc_auc

#: Candidate classifiers, simplest first (ties go to the simpler one).
CANDIDATES: tuple[str, ...] = ("logistic", "random_forest", "mlp")
#: Two candidates whose CV ROC-AUC differ by less than this count as equal.
TIE_MARGIN = 0.01
METRICS: tuple[str, ...] = ("roc_auc", "accuracy", "sensitivity", "specificity")


# ---------------------------------------------------------------------------------------- data
def case_truth(case: Any) -> dict[int, dict[str, Any]]:
    """Label → ``{"fractured", "complete", "grade"}`` of a case, from its ``genant.json``
    (or, without it, from the fracture mask: value 2 = fractured vertebra)."""
    if case.genant.exists():
        entries = json.loads(case.genant.read_text(encoding="utf-8"))
        return {int(e["label"]): {"fractured": int(e.get("grade") or 0) >= 1, "complete": bool(e.get("complete", True)),
                                  "grade": int(e.get("grade") or 0)} for e in entries}
    from VertebralFractureLib.io.readers import read_image

    lab = read_image(case.vertebra_mask).volume.array
    frac = read_image(case.fracture_mask).volume.array
    out = {}
    for label in (int(v) for v in np.unique(lab) if v):
        inside = frac[lab == label]
        out[label] = {"fractured": bool(np.mean(inside == 2) > 0.5), "complete": True, "grade": None}
    return out


def chosen_vertebrae(case: Any, normal_per_case: int | None, rng: np.random.Generator
                     ) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """The complete vertebrae of a case (:func:`case_truth`) and the labels to use: every fractured
    one and at most ``normal_per_case`` normal ones, drawn with ``rng`` (None keeps all)."""
    truth = {lab: t for lab, t in case_truth(case).items() if t["complete"]}
    fractured = sorted(lab for lab, t in truth.items() if t["fractured"])
    normal = sorted(lab for lab, t in truth.items() if not t["fractured"])
    if normal_per_case is not None and len(normal) > normal_per_case:
        normal = sorted(int(v) for v in rng.choice(normal, normal_per_case, replace=False))
    return truth, sorted(fractured + normal)


def collect(
    roots: Sequence[str | Path],
    normal_per_case: int | None = None,
    wiener_window: int | None = None,
    params: dict[str, Any] | None = None,
    cache: str | Path | None = None,
    seed: int = 0,
    log: Any = None,
) -> list[dict[str, Any]]:
    """Features and truth of the complete vertebrae of VerSe-layout folders.

    Args:
        roots: VerSe-layout folders (``rawdata/``, ``derivatives/``).
        normal_per_case: keep every fractured vertebra and at most this many normal ones per case
            (drawn at random); None keeps all.
        wiener_window: Wiener window before extraction (None = no filter).
        params: pyradiomics parameters (dict form); default: the shipped file.
        cache: folder for per-case JSON caches (reused when the settings match).
        seed: seed of the normal-vertebra sampling.
        log: a stream for progress lines.

    Returns:
        One dict per vertebra: ``case``, ``label``, ``name``, ``fractured``, ``grade``, ``seconds``,
        ``features``.
    """
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.io.verse import list_cases

    params = params if params is not None else load_params()
    key = json.dumps({"params": params, "wiener": wiener_window}, sort_keys=True)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for root in roots:
        cases = list_cases(root)
        for k, case in enumerate(cases):
            truth, wanted = chosen_vertebrae(case, normal_per_case, rng)
            cache_file = None if cache is None else Path(cache) / Path(root).name / f"{case.subject}.json"
            cached: dict[str, Any] = {}
            if cache_file is not None and cache_file.exists():
                data = json.loads(cache_file.read_text(encoding="utf-8"))
                if data.get("key") == key:
                    cached = {int(lab): v for lab, v in data["vertebrae"].items()}
            todo = [lab for lab in wanted if lab not in cached]
            if todo:
                image = read_image(case.ct).volume
                labelmap = read_labelmap(case.vertebra_mask, reference=image)
                for r in extract_features(image, labelmap, labels=todo, params=params, wiener_window=wiener_window):
                    cached[r.label] = {"name": r.name, "seconds": r.seconds, "features": r.features}
                if cache_file is not None:
                    cache_file.parent.mkdir(parents=True, exist_ok=True)
                    cache_file.write_text(json.dumps({"key": key, "vertebrae": cached}), encoding="utf-8")
            spacing = _spacing(case.ct)
            for lab in wanted:
                if lab in cached:
                    rows.append({"case": case.subject, "root": str(root), "spacing_mm": spacing,
                                 "label": lab, "name": cached[lab]["name"],
                                 "fractured": bool(truth[lab]["fractured"]), "grade": truth[lab]["grade"],
                                 "seconds": cached[lab]["seconds"], "features": cached[lab]["features"]})
            if log is not None:
                print(f"{Path(root).name} {k + 1}/{len(cases)} {case.subject}: {len(wanted)} vertebrae "
                      f"({len(todo)} extracted)", file=log, flush=True)
    return rows


def to_relative(rows: Sequence[dict[str, Any]], normal_per_case: int | None = None,
                seed: int = 0) -> list[dict[str, Any]]:
    """Rows (all vertebrae of each case, as :func:`collect` returns them with ``normal_per_case``
    None) with their features taken relative to their neighbours in the same case
    (:func:`~VertebralFractureLib.radiomics.relative_features`); vertebrae without a neighbour are
    dropped, then at most ``normal_per_case`` normal ones are kept per case (every fractured one)."""
    from VertebralFractureLib.radiomics import relative_features

    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r.get("root", ""), r["case"]), []).append(r)
    out = []
    for group in groups.values():
        rel = relative_features([(r["label"], r["features"]) for r in group])
        kept = [{**r, "features": f} for r, f in zip(group, rel) if f is not None]
        normal = [k for k, r in enumerate(kept) if not r["fractured"]]
        if normal_per_case is not None and len(normal) > normal_per_case:
            drop = set(int(v) for v in rng.choice(normal, len(normal) - normal_per_case, replace=False))
            kept = [r for k, r in enumerate(kept) if k not in drop]
        out.extend(kept)
    return out


def _spacing(path: Path) -> list[float]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return [round(float(s), 4) for s in reader.GetSpacing()]


def feature_matrix(rows: Sequence[dict[str, Any]], names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """The (n, features) matrix of rows, columns = ``names`` (default: features all rows share)."""
    if names is None:
        common = set(rows[0]["features"])
        for r in rows[1:]:
            common &= set(r["features"])
        names = [n for n in rows[0]["features"] if n in common]
    x = np.array([[r["features"][n] for n in names] for r in rows], dtype=float)
    return x, list(names)


# ---------------------------------------------------------------------------------------- selection
def lasso_path(x: np.ndarray, y: np.ndarray, names: Sequence[str], n_lambdas: int = 41, folds: int = 5,
               seed: int = 0) -> dict[str, Any]:
    """The seed's log-lambda selection: an L1 logistic path over log-spaced λ with CV ROC-AUC.

    ``x`` must be standardised. λ = 1/C runs from 100 down to 0.01 (log-spaced); at each λ the
    stratified ``folds``-fold ROC-AUC is computed and the model refitted on all rows to count its
    non-zero coefficients. The features kept are those of the best λ.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    lambdas = np.logspace(2, -2, n_lambdas)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    path = []
    for lam in lambdas:
        def model(lam: float = float(lam)) -> Any:
            return LogisticRegression(C=1.0 / lam, l1_ratio=1.0, solver="liblinear", class_weight="balanced",
                                      max_iter=5000, random_state=seed)
        aucs = []
        for train, test in splits:
            m = model().fit(x[train], y[train])
            aucs.append(roc_auc(y[test], m.decision_function(x[test])))
        full = model().fit(x, y)
        nonzero = [names[i] for i in np.flatnonzero(np.abs(full.coef_[0]) > 1e-10)]
        path.append({"log10_lambda": float(np.log10(lam)), "cv_roc_auc": float(np.mean(aucs)),
                     "cv_roc_auc_sd": float(np.std(aucs)), "n_features": len(nonzero), "features": nonzero})
    best = max((p for p in path if p["n_features"] > 0), key=lambda p: p["cv_roc_auc"])
    return {"path": path, "best_log10_lambda": best["log10_lambda"], "selected": best["features"],
            "best_cv_roc_auc": best["cv_roc_auc"]}


# ---------------------------------------------------------------------------------------- classifiers
def make_candidate(kind: str, seed: int = 0) -> Any:
    """An unfitted scikit-learn model of a candidate kind."""
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000, random_state=seed)
    if kind == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=200, min_samples_leaf=3, max_features="sqrt",
                                      class_weight="balanced_subsample", n_jobs=1, random_state=seed)
    if kind == "mlp":
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(hidden_layer_sizes=(32, 16), alpha=1.0, max_iter=2000, random_state=seed)
    raise ValueError(f"unknown candidate {kind!r}")


def export(kind: str, model: Any) -> dict[str, Any]:
    """A fitted scikit-learn model as the plain arrays :class:`RadiomicsClassifier` evaluates."""
    if kind == "logistic":
        return {"coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0])}
    if kind == "mlp":
        return {"weights": [w.tolist() for w in model.coefs_], "biases": [b.tolist() for b in model.intercepts_]}
    positive = list(model.classes_).index(1)
    trees = []
    for est in model.estimators_:
        t = est.tree_
        value = t.value[:, 0, :]
        prob = value[:, positive] / np.maximum(value.sum(axis=1), 1e-12)
        trees.append({"left": t.children_left.tolist(), "right": t.children_right.tolist(),
                      "feature": np.maximum(t.feature, 0).tolist(),
                      "threshold": [round(float(v), 6) for v in t.threshold],
                      "value": [round(float(v), 6) for v in prob]})
    return {"trees": trees}


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold maximising sensitivity + specificity − 1."""
    best, best_j = 0.5, -1.0
    for t in np.unique(p):
        pred = p >= t
        sens = np.mean(pred[y == 1]) if np.any(y == 1) else 0.0
        spec = np.mean(~pred[y == 0]) if np.any(y == 0) else 0.0
        if sens + spec - 1 > best_j:
            best, best_j = float(t), float(sens + spec - 1)
    return best


# ---------------------------------------------------------------------------------------- metrics
def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC-AUC, accuracy, sensitivity and specificity (NaN where a class is absent)."""
    y = np.asarray(y, dtype=bool)
    pred = np.asarray(p) >= threshold
    return {
        "roc_auc": roc_auc(y, p),
        "accuracy": float(np.mean(pred == y)) if len(y) else float("nan"),
        "sensitivity": float(np.mean(pred[y])) if y.any() else float("nan"),
        "specificity": float(np.mean(~pred[~y])) if (~y).any() else float("nan"),
    }


def bootstrap_metrics(y: np.ndarray, p: np.ndarray, threshold: float, n: int = 1000, seed: int = 0,
                      metric_fn: Any = None, names: Sequence[str] = METRICS) -> dict[str, Any]:
    """Each metric with its 95 % percentile bootstrap CI over ``n`` resamples of the vertebrae
    (``metric_fn(y, p, threshold)`` → ``{name: value}``, by default :func:`binary_metrics`)."""
    metric_fn = metric_fn or binary_metrics
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)
    point = metric_fn(y, p, threshold)
    samples: dict[str, list[float]] = {m: [] for m in names}
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        for m, v in metric_fn(y[idx], p[idx], threshold).items():
            if m in samples and np.isfinite(v):
                samples[m].append(v)
    out: dict[str, Any] = {"n": int(len(y)), "n_fractured": int(y.sum()), "threshold": float(threshold)}
    for m in names:
        s = np.asarray(samples[m])
        lo, hi = (np.percentile(s, [2.5, 97.5]) if len(s) else (np.nan, np.nan))
        out[m] = {"value": round(point[m], 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}
    return out


# ---------------------------------------------------------------------------------------- training
def train(
    train_rows: Sequence[dict[str, Any]],
    heldout: dict[str, Sequence[dict[str, Any]]],
    params: dict[str, Any],
    wiener_window: int | None,
    seed: int = 0,
    folds: int = 5,
    n_bootstrap: int = 1000,
) -> tuple[RadiomicsClassifier, dict[str, Any]]:
    """Select features, compare the candidates, fit the best and evaluate everything.

    Returns:
        The shipped classifier and a report (LASSO path, CV and held-out metrics of every
        candidate, the choice and why).
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x_all, names = feature_matrix(train_rows)
    y = np.array([int(r["fractured"]) for r in train_rows])
    finite = np.all(np.isfinite(x_all), axis=0) & (np.std(x_all, axis=0) > 0)
    x_all, names = x_all[:, finite], [n for n, f in zip(names, finite) if f]
    mean, scale = x_all.mean(axis=0), x_all.std(axis=0)
    z_all = (x_all - mean) / scale
    lasso = lasso_path(z_all, y, names, folds=folds, seed=seed)
    selected = lasso["selected"]
    cols = [names.index(n) for n in selected]
    z = z_all[:, cols]
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed + 1)
    report: dict[str, Any] = {
        "n_train": int(len(y)), "n_train_fractured": int(y.sum()), "n_features_total": len(names),
        "lasso": lasso, "candidates": {},
    }
    fitted: dict[str, RadiomicsClassifier] = {}
    for kind in CANDIDATES:
        oof = cross_val_predict(make_candidate(kind, seed), z, y, cv=cv, method="predict_proba")[:, 1]
        threshold = youden_threshold(y, oof)
        model = make_candidate(kind, seed).fit(z, y)
        clf = RadiomicsClassifier(kind=kind, features=selected, mean=mean[cols], scale=scale[cols],
                                  params=export(kind, model), threshold=threshold,
                                  radiomics_params=params, wiener_window=wiener_window)
        check = clf.predict_proba(z)
        if not np.allclose(check, model.predict_proba(z)[:, 1], atol=1e-5):
            raise RuntimeError(f"the exported {kind} disagrees with scikit-learn")
        fitted[kind] = clf
        entry: dict[str, Any] = {"cv": binary_metrics(y, oof, threshold), "threshold": threshold, "heldout": {}}
        for set_name, rows in heldout.items():
            yh = np.array([int(r["fractured"]) for r in rows])
            ph = clf.predict_proba([r["features"] for r in rows])
            entry["heldout"][set_name] = bootstrap_metrics(yh, ph, threshold, n=n_bootstrap, seed=seed)
            for r, p in zip(rows, ph):
                r.setdefault("predictions", {})[kind] = float(p)
        report["candidates"][kind] = entry
    best_auc = max(report["candidates"][k]["cv"]["roc_auc"] for k in CANDIDATES)
    chosen = next(k for k in CANDIDATES if report["candidates"][k]["cv"]["roc_auc"] >= best_auc - TIE_MARGIN)
    report["shipped"] = chosen
    report["why"] = (f"highest training cross-validated ROC-AUC ({report['candidates'][chosen]['cv']['roc_auc']:.3f}; "
                     f"the simplest candidate within {TIE_MARGIN} of the best {best_auc:.3f}); "
                     "chosen before looking at the held-out sets")
    return fitted[chosen], report


def install(classifier: RadiomicsClassifier, card: dict[str, Any], directory: str | Path | None = None) -> Path:
    """Write the classifier as ``radiomics-classifier.json`` and record it in ``models.json``."""
    from VertebralFractureLib.models import models_dir, sha256_of
    from VertebralFractureLib.training.install import MAX_BYTES

    d = Path(directory) if directory is not None else models_dir()
    d.mkdir(parents=True, exist_ok=True)
    target = d / f"{MODEL_NAME}.json"
    classifier.save(target)
    if target.stat().st_size > MAX_BYTES:
        raise ValueError(f"{target} is {target.stat().st_size / 2**20:.1f} MB; model files must be ≤ 25 MB")
    entry = {**card, "name": MODEL_NAME, "file": target.name, "sha256": sha256_of(target)}
    registry_path = d / "models.json"
    data = json.loads(registry_path.read_text(encoding="utf-8")) if registry_path.exists() else {"models": []}
    data["models"] = [m for m in data.get("models", []) if m.get("name") != MODEL_NAME] + [entry]
    registry_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return target


def model_card(classifier: RadiomicsClassifier, report: dict[str, Any], train_roots: Sequence[str],
               normal_per_case: int | None) -> dict[str, Any]:
    """The ``models.json`` entry (without name, file, sha256) of a trained classifier."""
    chosen = report["candidates"][report["shipped"]]
    return {
        "version": "1.0",
        "architecture": {"kind": classifier.kind,
                         "inputs": ("pyradiomics features of one vertebra relative to those of up to two neighbours "
                                    "on each side in the same scan, (f - median) / (|f| + |median|)"
                                    if classifier.relative else "pyradiomics features of one vertebra (original image)"),
                         "n_features": len(classifier.features), "selection": "L1 logistic path (log-lambda), "
                         f"best log10(lambda) = {report['lasso']['best_log10_lambda']:.2f}",
                         "wiener_window": classifier.wiener_window},
        "spacing_mm": [1.0, 1.0, 1.0],
        "classes": ["normal", "fractured"],
        "training_data": (f"SynthSpine {', '.join(Path(r).name for r in train_roots)}: {report['n_train']} complete "
                          f"vertebrae ({report['n_train_fractured']} fractured = Genant grade ≥ 1; every fractured and "
                          f"at most {normal_per_case} normal per case)"),
        "metrics": {"cv_roc_auc": round(chosen["cv"]["roc_auc"], 4),
                    **{name: {m: chosen["heldout"][name][m] for m in METRICS} for name in chosen["heldout"]}},
        "postprocess": {"threshold": round(classifier.threshold, 4), "why": report["why"]},
    }


# ---------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m VertebralFractureLib.training.radiomics_classifier",
                                description="train the radiomics fracture classifier on VerSe-layout data")
    p.add_argument("--train", nargs="+", required=True, type=Path, help="training folders (VerSe layout)")
    p.add_argument("--heldout", nargs="*", default=[], type=Path, help="held-out folders, evaluated only")
    p.add_argument("--normal-per-case", type=int, default=5,
                   help="normal vertebrae drawn per training case (every fractured one is kept); -1 = all")
    p.add_argument("--wiener", type=int, default=3, help="Wiener window in voxels (0 = no filter)")
    p.add_argument("--params", type=Path, default=None, help="pyradiomics parameter file")
    p.add_argument("--cache", type=Path, default=None, help="folder for per-case feature caches")
    p.add_argument("--output", "-o", type=Path, required=True, help="folder for the report and the classifier")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--relative", action="store_true",
                   help="features relative to each vertebra's neighbours in the same scan (every vertebra is extracted)")
    p.add_argument("--install", action="store_true", help="install the classifier into Resources/Models")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wiener = args.wiener if args.wiener > 0 else None
    normal = None if args.normal_per_case < 0 else args.normal_per_case
    params = load_params(args.params)
    args.output.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train_rows = collect(args.train, None if args.relative else normal, wiener, params, args.cache, args.seed,
                         log=sys.stderr)
    heldout = {Path(r).name: collect([r], None, wiener, params, args.cache, args.seed, log=sys.stderr)
               for r in args.heldout}
    if args.relative:
        train_rows = to_relative(train_rows, normal, args.seed)
        heldout = {name: to_relative(rows) for name, rows in heldout.items()}
    t_features = time.perf_counter() - t0
    classifier, report = train(train_rows, heldout, params, wiener, seed=args.seed, n_bootstrap=args.bootstrap)
    seconds = [r["seconds"] for rows in [train_rows, *heldout.values()] for r in rows]
    report["seconds_per_vertebra"] = {"median": float(np.median(seconds)), "mean": float(np.mean(seconds)),
                                      "p95": float(np.percentile(seconds, 95)), "n": len(seconds)}
    report["feature_time_s"] = t_features
    report["selected_features"] = classifier.features
    classifier.info = {"training_data": [Path(r).name for r in args.train], "n_train": report["n_train"]}
    classifier.save(args.output / f"{MODEL_NAME}.json")
    (args.output / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_predictions(args.output / "heldout_predictions.csv", heldout)
    print(summary(report))
    if args.install:
        target = install(classifier, model_card(classifier, report, [str(r) for r in args.train], normal))
        print(f"installed {target}")
    return 0


def write_predictions(path: Path, heldout: dict[str, Sequence[dict[str, Any]]]) -> None:
    """One row per held-out vertebra: set, case, spacing, label, truth and each candidate's P(fractured)."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["set", "case", "spacing_x_mm", "spacing_y_mm", "spacing_z_mm", "label", "name",
                         "fractured", "grade", *[f"p_{k}" for k in CANDIDATES]])
        for set_name, rows in heldout.items():
            for r in rows:
                p = r.get("predictions", {})
                writer.writerow([set_name, r["case"], *r["spacing_mm"], r["label"], r["name"], int(r["fractured"]),
                                 r["grade"], *[round(p[k], 5) if k in p else "" for k in CANDIDATES]])


def summary(report: dict[str, Any]) -> str:
    """A Markdown table of the held-out metrics of every candidate."""
    lines = [f"selected {len(report['lasso']['selected'])} of {report['n_features_total']} features at "
             f"log10(lambda) = {report['lasso']['best_log10_lambda']:.2f}; shipped: {report['shipped']} ({report['why']})",
             "", "| classifier | set | n (fractured) | threshold | ROC-AUC | accuracy | sensitivity | specificity |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for kind, entry in report["candidates"].items():
        cv = entry["cv"]
        lines.append(f"| {kind} | training CV | {report['n_train']} ({report['n_train_fractured']}) | "
                     f"{entry['threshold']:.3f} | " + " | ".join(f"{cv[m]:.3f}" for m in METRICS) + " |")
        for name, h in entry["heldout"].items():
            cells = [f"{h[m]['value']:.3f} [{h[m]['ci95'][0]:.3f}, {h[m]['ci95'][1]:.3f}]" for m in METRICS]
            lines.append(f"| {kind} | {name} | {h['n']} ({h['n_fractured']}) | {h['threshold']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

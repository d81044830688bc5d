"""``vertebral-fracture train …``, ``evaluate …`` and ``bench``: the developer commands."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=["localize", "segment", "keypoints"], help="which model to train")
    p.add_argument("--data", required=True, type=Path, nargs="+",
                   help="VerSe-layout training folder(s) (e.g. SynthSpine output)")
    p.add_argument("--val", type=Path, default=None, help="VerSe-layout validation folder (fixed, never trained on)")
    p.add_argument("-o", "--output", required=True, type=Path, help="run folder (checkpoints, log.csv); resumes if present")
    p.add_argument("--config", default="fast", choices=["fast", "seed"], help="named training settings")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--init", type=Path, default=None,
                   help="start from this state_dict, e.g. the shipped Resources/Models/<stage>.pt, so that the run adds "
                        "to the last (a fresh optimizer); ignored when the run folder resumes")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="samples per iteration")
    p.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds (then save)")
    p.add_argument("--variant", default=None, choices=["ln+gn", "ln", "gn", "scn"], help="ablation: network variant")
    p.add_argument("--no-attention", action="store_true")
    p.add_argument("--no-residual", action="store_true")
    p.add_argument("--no-multiple-filtering", action="store_true")
    p.add_argument("--fov-crop", type=float, default=None, metavar="SHARE",
                   help="localize: share of patches cut to a tight spine-only field of view (default 0.3)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes preparing the training samples ahead and filling the caches (localize, "
                        "segment: default 0, in the training process; keypoints: extracting the sagittal "
                        "planes, default 1)")
    p.add_argument("--validate-every", type=int, default=None, metavar="N",
                   help="iterations between validations (default: the stage's, 250 / 500 / 500)")
    p.add_argument("--deformed-share", type=float, default=None,
                   help="keypoints: share of each batch drawn from deformed (fracture-shaped) vertebrae")
    p.add_argument("--defect-share", type=float, default=None,
                   help="keypoints: share of samples whose outline gets gaps (a posterior-wall pocket, small holes) "
                        "with the keypoints unchanged")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--install", action="store_true", help="install the best weights into Resources/Models")


def cmd_train(args: argparse.Namespace, progress: Any) -> int:
    from VertebralFractureLib.models import select_device

    device = select_device(args.device)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    overrides: dict[str, Any] = {}
    if args.iterations:
        overrides["iterations"] = args.iterations
    if args.lr:
        overrides["lr"] = args.lr
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.validate_every is not None:
        if args.validate_every < 1:
            raise SystemExit("--validate-every must be at least 1")
        overrides["validate_every"] = args.validate_every
    if args.workers is not None and args.workers < 0:
        raise SystemExit("--workers must be 0 or more")
    if args.stage != "localize" and (args.variant or args.no_attention or args.no_residual
                                     or args.no_multiple_filtering):
        raise SystemExit("--variant and --no-* apply to 'train localize' only")
    # shares of the training samples that one stage's trainer draws in a special way
    for flag, field, stage in (("--deformed-share", "deformed_share", "keypoints"),
                               ("--defect-share", "defect_share", "keypoints"),
                               ("--fov-crop", "fov_crop", "localize")):
        value = getattr(args, field)
        if value is None:
            continue
        if args.stage != stage:
            raise SystemExit(f"{flag} applies to 'train {stage}' only")
        if not 0.0 <= value <= 1.0:
            raise SystemExit(f"{flag} is a share between 0 and 1")
        overrides[field] = value
    if args.stage == "keypoints":
        from VertebralFractureLib.analysis import KEYPOINT_NAMES
        from VertebralFractureLib.training.keypoints import KeypointTraining, train_keypoints

        kcfg = KeypointTraining(**overrides)
        print(f"training stage-3 keypoints on {device} ({kcfg.iterations} iterations)", file=sys.stderr)
        best = train_keypoints(args.data, args.output, kcfg, val_root=args.val, device=device, log=log,
                               time_budget_s=args.time_budget, workers=1 if args.workers is None else max(1, args.workers),
                               init_weights=args.init)
        card = {"version": time.strftime("%Y%m%d"), "architecture": kcfg.architecture(),
                "spacing_mm": [kcfg.pixel_mm] * 2, "patch_size": [kcfg.size] * 2,
                "classes": list(KEYPOINT_NAMES), "sigma_mm": kcfg.sigma_mm}
    elif args.stage == "segment":
        from VertebralFractureLib.training.segmentation import SegmentationTraining, train_segmentation

        scfg = SegmentationTraining(**overrides)
        print(f"training stage-2 segmentation on {device} ({scfg.iterations} iterations)", file=sys.stderr)
        best = train_segmentation(args.data, args.output, scfg, val_root=args.val, device=device, log=log,
                                  time_budget_s=args.time_budget, init_weights=args.init, workers=args.workers or 0)
        card = {"version": time.strftime("%Y%m%d"), "architecture": scfg.architecture(),
                "spacing_mm": [scfg.spacing_mm] * 3, "patch_size": list(scfg.patch_size),
                "classes": ["background", "normal", "fractured"]}
    else:
        from VertebralFractureLib.training.localization import LocalizationTraining, train_localization

        if args.variant:
            overrides["variant"] = args.variant
        if args.no_attention:
            overrides["attention"] = False
        if args.no_residual:
            overrides["residual"] = False
        if args.no_multiple_filtering:
            overrides["multiple_filtering"] = False
        cfg = LocalizationTraining.named(args.config, **overrides)
        print(f"training stage-1 localization on {device} ({cfg.iterations} iterations, config {args.config})", file=sys.stderr)
        best = train_localization(args.data, args.output, cfg, val_root=args.val, device=device, log=log,
                                  time_budget_s=args.time_budget, init_weights=args.init, workers=args.workers or 0)
        card = {"version": time.strftime("%Y%m%d"), "architecture": cfg.architecture(),
                "spacing_mm": [cfg.spacing_mm] * 3, "patch_size": list(cfg.patch_size),
                "classes": [int(x) for x in _channel_labels()], "sigma_mm": cfg.sigma_mm}
    if args.install:
        from VertebralFractureLib.training.install import install_model

        card.update({"training_data": "SynthSpine VerSe-layout folder(s) " + ", ".join(d.name for d in args.data)
                     + f" ({device})", "metrics": {}})
        name = {"localize": "localization", "segment": "segmentation", "keypoints": "keypoints"}[args.stage]
        target = install_model(name, best, card)
        print(f"installed {target}", file=sys.stderr)
    return 0


def _channel_labels() -> tuple[int, ...]:
    from VertebralFractureLib.localize import CHANNEL_LABELS

    return CHANNEL_LABELS


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", choices=["localize", "segment", "grade", "real", "radiograph"],
                   help="which stage to evaluate, 'real': the whole pipeline on real CT with known truth, or "
                        "'radiograph': the radiograph models on labelled radiograph folders")
    p.add_argument("inputs", nargs="*", type=Path, metavar="PATH",
                   help="real: folders of real cases (CT + vertebra mask + genant_grades.json, or CT + "
                        "*_bodies.json annotation), masks or annotation files")
    p.add_argument("--data", type=Path, default=None,
                   help="localize/segment/grade: held-out VerSe-layout folder with true centroids")
    p.add_argument("--centroids-from-masks", action="store_true",
                   help="real: the true centroids (masks' centres of mass, or annotated body centres) in "
                        "place of stage 1")
    p.add_argument("--masks-from-truth", action="store_true",
                   help="real: grade each true vertebra mask (stage 3 alone, as 'grade' does; a mask without "
                        "its CT counts too): the grading on real anatomy, apart from stages 1 and 2")
    p.add_argument("--weights", type=Path, default=None, help="a state_dict to evaluate instead of the installed model")
    p.add_argument("--localization-weights", type=Path, default=None,
                   help="segment: stage-1 state_dict to use instead of the installed one")
    p.add_argument("--true-centroids", action="store_true",
                   help="segment: crop at the true centroids (stage 2 alone) instead of running stage 1")
    p.add_argument("--centroid-jitter-mm", type=float, default=0.0, metavar="MM",
                   help="segment, with --true-centroids: move each true centroid by a random 3D Gaussian offset "
                        "of this SD per axis (seeded), to see how stage 2 copes with localization errors")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="write the metrics and per-case results as JSON; real: a folder for "
                        "real_vertebrae.csv, real_summary.json and real_cases.png")
    p.add_argument("--threshold", type=float, nargs="*", default=None,
                   help="heatmap peak threshold(s) to evaluate (default: the model card's); grade: the "
                        "keypoint network's minimum peak (not for real: stage 1 runs as in analyze)")
    p.add_argument("--masks", default="true", choices=["true", "stage2"],
                   help="grade: grade the true vertebra masks, or stage 2's segmentation at the true centroids")
    p.add_argument("--segmentation-weights", type=Path, default=None,
                   help="grade --masks stage2: stage-2 state_dict to use instead of the installed one")
    p.add_argument("--keypoints", default="auto", choices=["auto", "learned", "geometric"],
                   help="grade: learned keypoints (installed model or --weights), geometric, or auto")
    p.add_argument("--no-bone-growth", dest="bone_growth", action="store_false",
                   help="segment, real: stage 2's outlines as the network drew them, not completed into the bone "
                   "they touch")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def cmd_evaluate(args: argparse.Namespace, progress: Any) -> int:
    from VertebralFractureLib.errors import InputError

    if args.stage == "real":
        return _evaluate_real(args, progress)
    if args.stage == "radiograph":
        return _evaluate_radiograph(args, progress)
    if args.data is None or args.inputs:
        raise InputError(f"evaluate {args.stage} takes its held-out folder as --data DIR (folder arguments are for 'evaluate real')")
    if args.stage == "segment":
        return _evaluate_segment(args, progress)
    if args.stage == "grade":
        return _evaluate_grade(args, progress)

    from VertebralFractureLib.io.readers import read_image
    from VertebralFractureLib.io.verse import list_cases, read_centroids
    from VertebralFractureLib.localize import card_threshold, detect_and_name, two_looks
    from VertebralFractureLib.models import select_device
    from VertebralFractureLib.training.metrics import localization_metrics

    device = select_device(args.device)
    card, net = network("localization", args.weights)
    thresholds = args.threshold or [None]
    preds: dict[Any, list] = {t: [] for t in thresholds}
    truths, per_case = [], []
    cases = list_cases(args.data)
    for k, case in enumerate(cases):
        ct = read_image(case.ct).volume
        truth = read_centroids(case.centroids, ct)
        truths.append(truth)
        t0 = time.perf_counter()
        heat, mirrored, grid = two_looks(ct, card, net, device)  # as the product: once per case, every threshold
        seconds = time.perf_counter() - t0
        for t in thresholds:
            t1 = time.perf_counter()
            threshold = card_threshold(card) if t is None else t
            found = detect_and_name(heat, grid, threshold, second=mirrored)
            pred = {c.label: c.position_lps for c in found}
            preds[t].append(pred)
            per_case.append({"case": case.subject, "threshold": threshold,
                             "seconds": round(seconds + time.perf_counter() - t1, 2),
                             "found": [int(c.label) for c in found], "truth": sorted(int(x) for x in truth),
                             **localization_metrics([pred], [truth])})
        progress("evaluate", (k + 1) / len(cases), case.subject)
    metrics = {str(t): localization_metrics(preds[t], truths) for t in thresholds}
    progress.close()
    print(json.dumps(_json_safe(metrics if len(thresholds) > 1 else metrics[str(thresholds[0])]), indent=2))
    if args.output:
        args.output.write_text(json.dumps(_json_safe({"metrics": metrics, "cases": per_case}), indent=2))
    return 0


def _evaluate_real(args: argparse.Namespace, progress: Any) -> int:
    """The whole pipeline on real cases (:mod:`.real`): table on stdout, files in ``--output``."""
    from VertebralFractureLib.errors import InputError
    from VertebralFractureLib.pipeline import AnalysisConfig
    from VertebralFractureLib.training.real import evaluate_real, format_table

    paths = list(args.inputs) + ([args.data] if args.data is not None else [])
    if not paths:
        raise InputError("evaluate real needs at least one folder or file")
    if args.threshold is not None:
        raise InputError("evaluate real runs stage 1 as analyze does, at its model card's threshold: no --threshold")
    result = evaluate_real(paths, args.output, centroids_from_truth=args.centroids_from_masks,
                           config=AnalysisConfig(device=args.device, bone_growth=args.bone_growth), progress=progress,
                           masks_from_truth=args.masks_from_truth)
    progress.close()
    print(format_table(result))
    for f in result["files"]:
        print(f"wrote {f}", file=sys.stderr)
    return 0


def _evaluate_radiograph(args: argparse.Namespace, progress: Any) -> int:
    """The installed radiograph models on labelled radiograph folders (:mod:`.radiograph_eval`)."""
    from VertebralFractureLib.errors import InputError
    from VertebralFractureLib.models import select_device
    from VertebralFractureLib.training.radiograph_eval import evaluate_radiographs, format_tables

    paths = list(args.inputs) + ([args.data] if args.data is not None else [])
    missing = [p for p in paths if not (Path(p) / "radiographs.json").is_file()]
    if not paths or missing:
        raise InputError("evaluate radiograph needs folders of labelled radiographs (radiographs.json, as "
                         "VertebralFractureLib.training.radiograph_data writes them)"
                         + (f"; not one: {', '.join(str(m) for m in missing)}" if missing else ""))
    result = evaluate_radiographs(paths, args.output, device=select_device(args.device), progress=progress)
    progress.close()
    print(format_tables(result))
    for f in result.get("files", []):
        print(f"wrote {f}", file=sys.stderr)
    return 0


def _evaluate_segment(args: argparse.Namespace, progress: Any) -> int:
    """Stage 2 on held-out cases, from stage-1 centroids (default) or the true ones."""

    from VertebralFractureLib.errors import UsageError
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.io.verse import list_cases, read_centroids
    from VertebralFractureLib.localize import localize
    from VertebralFractureLib.models import select_device
    from VertebralFractureLib.segment import grow_outlines, segment
    from VertebralFractureLib.training.segmentation import evaluate_case, summarize

    device = select_device(args.device)
    card, net = network("segmentation", args.weights)
    if args.centroid_jitter_mm < 0 or (args.centroid_jitter_mm > 0 and not args.true_centroids):
        raise UsageError("--centroid-jitter-mm needs --true-centroids and must not be negative")
    loc = None if args.true_centroids else network("localization", args.localization_weights)
    jitter_rng = np.random.default_rng(0)
    rows, per_case = [], []
    cases = list_cases(args.data)
    for k, case in enumerate(cases):
        ct = read_image(case.ct).volume
        truth = read_labelmap(case.vertebra_mask, ct)
        grades = {int(e["label"]): (int(e["grade"] or 0), bool(e["complete"])) for e in json.loads(case.genant.read_text())}
        t0 = time.perf_counter()
        if loc is None:
            cents = read_centroids(case.centroids, ct)
            if args.centroid_jitter_mm > 0:
                cents = {lab: c + jitter_rng.normal(0.0, args.centroid_jitter_mm, 3) for lab, c in sorted(cents.items())}
        else:
            threshold = args.threshold[0] if args.threshold else None
            cents = {c.label: c.position_lps for c in localize(ct, device=device, model=loc, threshold=threshold)}
        t1 = time.perf_counter()
        labelmap, probs, _ = segment(ct, cents, device=device, model=(card, net)) if cents else (ct.with_array(np.zeros(ct.array.shape, np.uint8)), {}, {})
        if cents and args.bone_growth:
            labelmap = labelmap.with_array(grow_outlines(np.asarray(labelmap.array), ct, card, cents))
        t2 = time.perf_counter()
        case_rows = evaluate_case(labelmap.array, truth.array, tuple(ct.spacing[::-1]), grades, probs)
        rows += [{"case": case.subject, **r} for r in case_rows]
        per_case.append({"case": case.subject, "localize_s": round(t1 - t0, 2), "segment_s": round(t2 - t1, 2),
                         "vertebrae_segmented": len(probs)})
        progress("evaluate", (k + 1) / len(cases), case.subject)
    progress.close()
    summary = summarize(rows)
    summary["centroids"] = ("stage 1" if not args.true_centroids else "true" if not args.centroid_jitter_mm
                            else f"true + N(0, {args.centroid_jitter_mm:g} mm) per axis")
    summary["segment_seconds_per_vertebra"] = float(sum(c["segment_s"] for c in per_case) / max(1, sum(c["vertebrae_segmented"] for c in per_case)))
    print(json.dumps(_json_safe(summary), indent=2))
    if args.output:
        args.output.write_text(json.dumps(_json_safe({"metrics": summary, "cases": per_case, "vertebrae": rows}), indent=2))
    return 0


def _evaluate_grade(args: argparse.Namespace, progress: Any) -> int:
    """Stage 3 alone on held-out cases: grading from the true vertebra masks against the true
    keypoints, heights and Genant grades (SynthSpine ``*_genant.json``)."""
    from dataclasses import replace

    from VertebralFractureLib.anatomy import name_of
    from VertebralFractureLib.genant import NOT_GRADED
    from VertebralFractureLib.io.readers import read_image, read_labelmap
    from VertebralFractureLib.io.verse import list_cases, read_centroids
    from VertebralFractureLib.pipeline import AnalysisConfig, GivenSegmentation, analyze, grading_stage
    from VertebralFractureLib.segment import segment

    model = None
    if args.keypoints != "geometric" and args.weights is not None:
        card, net = network("keypoints", args.weights)
        if args.threshold:
            card = replace(card, postprocess={**card.postprocess, "min_peak": args.threshold[0]})
        model = (card, net)
    config = AnalysisConfig(keypoints=args.keypoints)
    seg_model = network("segmentation", args.segmentation_weights) if args.masks == "stage2" else None
    rows = []
    cases = list_cases(args.data)
    for k, case in enumerate(cases):
        ct = read_image(case.ct).volume
        if seg_model is None:
            seg = read_labelmap(case.vertebra_mask, ct)
        else:
            seg, _, _ = segment(ct, read_centroids(case.centroids, ct), model=seg_model)
        analysis = analyze(ct, config, stages=[GivenSegmentation(seg), grading_stage(model)])
        ours = {v.label: v for v in analysis.vertebrae}
        slice_mm = ct.slice_mm
        for e in json.loads(case.genant.read_text()):
            label = int(e["label"])
            if not e.get("complete") or e.get("keypoints_lps_mm") is None or label in NOT_GRADED:
                continue
            v = ours.get(label)
            row: dict[str, Any] = {"case": case.subject, "name": name_of(label), "spacing_mm": list(ct.spacing),
                                   "slice_mm": slice_mm, "true_grade": int(e["grade"] or 0),
                                   "true_ratio": e.get("ratio"), "graded": v is not None and v.genant is not None}
            if row["graded"]:
                kp_err = [float(np.linalg.norm(np.asarray(v.keypoints_lps_mm[n]) - np.asarray(e["keypoints_lps_mm"][n])))
                          for n in e["keypoints_lps_mm"]]
                row.update({"grade": v.genant.grade, "ratio": v.genant.ratio, "keypoint_error_mm": float(np.mean(kp_err)),
                            "keypoint_error_max_mm": float(np.max(kp_err)), "keypoint_method": v.keypoint_method,
                            "height_error_mm": {h: v.heights_mm[h] - e["heights_mm"][h] for h in e["heights_mm"]}})
            rows.append(row)
        progress("evaluate", (k + 1) / len(cases), case.subject)
    progress.close()
    summary = grade_summary(rows)
    summary["keypoints"] = args.keypoints
    summary["masks"] = args.masks
    summary["by_slice_mm"] = {
        name: grade_summary([r for r in rows if lo < r["slice_mm"] <= hi])
        for name, lo, hi in (("<=1.25", 0.0, 1.25), ("1.25-2.5", 1.25, 2.5), (">2.5", 2.5, np.inf))}
    print(json.dumps(_json_safe(summary), indent=2))
    if args.output:
        args.output.write_text(json.dumps(_json_safe({"metrics": summary, "vertebrae": rows}), indent=2))
    return 0


def grade_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Keypoint, height, ratio and grade agreement of graded vertebrae (rows of ``evaluate grade``)."""
    from VertebralFractureLib.training.metrics import quadratic_kappa

    graded = [r for r in rows if r["graded"]]
    if not graded:
        return {"vertebrae_complete": len(rows), "graded": 0}
    tg = np.array([r["true_grade"] for r in graded])
    pg = np.array([r["grade"] for r in graded])
    confusion = [[int(np.sum((tg == a) & (pg == b))) for b in range(4)] for a in range(4)]
    heights = ("anterior", "middle", "posterior")
    return {
        "vertebrae_complete": len(rows), "graded": len(graded), "fractured": int((tg >= 1).sum()),
        "learned_keypoints": int(sum(r.get("keypoint_method") == "learned" for r in graded)),
        "keypoint_error_mm_mean": float(np.mean([r["keypoint_error_mm"] for r in graded])),
        "keypoint_error_mm_median": float(np.median([r["keypoint_error_mm"] for r in graded])),
        "height_mae_mm": {h: float(np.mean([abs(r["height_error_mm"][h]) for r in graded])) for h in heights},
        "height_bias_mm": {h: float(np.mean([r["height_error_mm"][h] for r in graded])) for h in heights},
        "ratio_mae": float(np.mean([abs(r["ratio"] - r["true_ratio"]) for r in graded if r["true_ratio"] is not None])),
        "exact_grade": float(np.mean(tg == pg)),
        "fractured_or_not": float(np.mean((tg >= 1) == (pg >= 1))),
        "sensitivity": float(np.mean(pg[tg >= 1] >= 1)) if (tg >= 1).any() else None,
        "specificity": float(np.mean(pg[tg == 0] == 0)) if (tg == 0).any() else None,
        "weighted_kappa": quadratic_kappa(tg, pg),
        "confusion_true_rows_pred_cols": confusion,
    }


def _json_safe(obj: Any) -> Any:
    """NaN/inf → null and numpy scalars → Python numbers, so the output is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def network(name: str, weights: Path | None = None) -> tuple[Any, Any]:
    """``(card, network)`` of the installed model ``name``, or of a training run's ``weights`` file."""
    import torch

    from VertebralFractureLib import models
    from VertebralFractureLib.keypoints import build_keypoint_network
    from VertebralFractureLib.localize import build_network
    from VertebralFractureLib.networks.unet import build_unet

    build = {"segmentation": build_unet, "keypoints": build_keypoint_network}.get(name, build_network)
    if weights is None:
        return models.load_network(name, build)
    card = _card_of_run(weights, name)
    net = build(card.architecture)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return card, net


def _card_of_run(weights: Path, name: str) -> Any:
    """The model card of a training run folder (``config.json`` next to the weights)."""
    from VertebralFractureLib.models import ModelCard

    cfg_path = weights.parent / "config.json"
    if not cfg_path.exists():
        raise SystemExit(f"{cfg_path} not found: evaluate run weights from their training folder")
    cfg = json.loads(cfg_path.read_text())
    if name == "segmentation":
        from VertebralFractureLib.training.segmentation import SegmentationTraining

        tc = SegmentationTraining(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    elif name == "keypoints":
        from VertebralFractureLib.training.keypoints import KeypointTraining

        kc = KeypointTraining(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
        return ModelCard(name=name, file=weights.name, sha256="", architecture=kc.architecture(),
                         spacing_mm=(kc.pixel_mm,) * 2, patch_size=(kc.size,) * 2)
    else:
        from VertebralFractureLib.training.localization import LocalizationTraining

        tc = LocalizationTraining(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
    return ModelCard(name=name, file=weights.name, sha256="", architecture=tc.architecture(),
                     spacing_mm=(tc.spacing_mm,) * 3, patch_size=tuple(tc.patch_size))


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", type=Path, help="CT to time (volume file or DICOM folder), or with --radiograph a "
                   "radiograph (DICOM, PNG/JPEG with --pixel-spacing)")
    p.add_argument("--radiograph", action="store_true", help="time the radiograph analysis (radiograph command)")
    p.add_argument("--pixel-spacing", type=float, default=None, metavar="MM", help="with --radiograph: a PNG's pixel size")
    p.add_argument("--stages", default="localize", choices=["localize", "all"], help="what to time")
    p.add_argument("--repeat", type=int, default=3, help="timed runs after one warm-up")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--centroids", type=Path, default=None, metavar="FILE",
                   help="with --stages all: given centroids (.mrk.json or _ctd.json) in place of stage 1")
    p.add_argument("--radiomics", action="store_true", help="with --stages all: the radiomics second opinion too")
    p.add_argument("--slice-classifier", action="store_true",
                   help="with --stages all: the slice classifier (seed 000) too")


def cmd_bench(args: argparse.Namespace, progress: Any) -> int:
    """Wall time per stage (median of ``--repeat`` runs after a warm-up) and peak memory."""
    import platform

    import torch

    from VertebralFractureLib.errors import UsageError
    from VertebralFractureLib.io.readers import read_image
    from VertebralFractureLib.localize import localize
    from VertebralFractureLib.models import select_device
    from VertebralFractureLib.pipeline import (
        AnalysisConfig,
        analyze,
        default_stages,
        given_centroid_stages,
        second_opinion_stages,
    )

    if getattr(args, "radiograph", False):
        return _bench_radiograph(args)
    extra = second_opinion_stages(getattr(args, "radiomics", False), getattr(args, "slice_classifier", False))
    if (args.centroids is not None or extra) and args.stages != "all":
        raise UsageError("--centroids, --radiomics and --slice-classifier need --stages all")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    t0 = time.perf_counter()
    image = read_image(args.input).volume
    read_s = time.perf_counter() - t0
    from VertebralFractureLib.sanity import check_ct

    check_ct(image, Path(args.input).name)  # what analyze would refuse is not timed either
    stages = None
    if args.centroids is not None:
        from VertebralFractureLib.io.centroids import read_centroid_file

        stages = given_centroid_stages(read_centroid_file(args.centroids, image))
    if extra:
        stages = [*(stages or default_stages()), *extra]
    times, stage_times = [], []
    for _ in range(args.repeat + 1):
        t0 = time.perf_counter()
        if args.stages == "localize":
            found = localize(image, device=device)
            n = len(found)
        else:
            analysis = analyze(image, AnalysisConfig(device=args.device), stages=stages)
            n = len(analysis.vertebrae)
            stage_times.append(analysis.timings_s)
        times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "input": args.input.name, "extent_mm": [round(x) for x in image.extent_mm()], "stages": args.stages,
        "device": device, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "read_s": round(read_s, 2), "warmup_s": round(times[0], 2), "median_s": round(float(np.median(times[1:])), 2),
        "runs_s": [round(t, 2) for t in times[1:]], "vertebrae": n, "peak_rss_mb": round(peak_mb),
    }
    if args.centroids is not None:
        report["centroids"] = f"given ({args.centroids.name})"
    if stage_times:
        report["stage_median_s"] = {k: round(float(np.median([t[k] for t in stage_times[1:]])), 2) for k in stage_times[0]}
        if "segment" in report["stage_median_s"] and n:
            report["segment_s_per_vertebra"] = round(report["stage_median_s"]["segment"] / n, 3)
        complete = sum(1 for v in analysis.vertebrae if v.complete)
        if "slice-classifier" in report["stage_median_s"] and complete:
            report["slice_classifier_s_per_vertebra"] = round(report["stage_median_s"]["slice-classifier"] / complete, 3)
    print(json.dumps(report, indent=2))
    return 0


def _bench_radiograph(args: argparse.Namespace) -> int:
    """Wall time of a radiograph's analysis (median of ``--repeat`` after a warm-up that loads the
    models) and peak memory."""
    import platform

    import torch

    from VertebralFractureLib.io.radiograph import read_radiograph
    from VertebralFractureLib.models import select_device
    from VertebralFractureLib.radiograph_analysis import analyze_radiograph

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    t0 = time.perf_counter()
    radiograph = read_radiograph(args.input, args.pixel_spacing)
    read_s = time.perf_counter() - t0
    times, stage_times, result = [], [], None
    for _ in range(args.repeat + 1):
        t0 = time.perf_counter()
        result = analyze_radiograph(radiograph, device=device)
        times.append(time.perf_counter() - t0)
        stage_times.append(result.timings_s)
    report = {"input": args.input.name, "pixels": list(radiograph.image.shape),
              "pixel_spacing_mm": list(radiograph.pixel_spacing_mm), "stages": "radiograph", "device": device,
              "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "read_s": round(read_s, 2), "warmup_s": round(times[0], 2),
              "median_s": round(float(np.median(times[1:])), 2), "runs_s": [round(t, 2) for t in times[1:]],
              "stage_median_s": {k: round(float(np.median([t[k] for t in stage_times[1:]])), 3) for k in stage_times[0]},
              "vertebrae": len(result.vertebrae) if result else 0,
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    print(json.dumps(report, indent=2))
    return 0

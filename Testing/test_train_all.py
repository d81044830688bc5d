"""``Utilities/train_all.py``, the one script that trains every stage on a lent GPU machine, at a tiny CPU budget."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("train_all", REPO / "Utilities" / "train_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_train_all_trains_every_stage_and_brings_back_seven_files(tmp_path):
    out = tmp_path / "out"
    assert _script().main(["--out", str(out), "--tiny", "--workers", "1", "--device", "cpu"]) == 0
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    assert files == sorted([f"{m}_{kind}" for m in ("localization", "segmentation", "keypoints")
                            for kind in ("best.pt", "log.csv")] + ["train_all.json"])
    summary = json.loads((out / "train_all.json").read_text())
    for model in ("localization", "segmentation", "keypoints"):
        r = summary["models"][model]
        assert r["exit"] == 0 and r["iterations"] == 2 and "--init" in r["command"]
        state = torch.load(out / f"{model}_best.pt", weights_only=True)
        assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not (out / "runs").exists()

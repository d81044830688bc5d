"""``Utilities/train_all.py``, the one script that trains every stage on a lent GPU machine, at a tiny CPU budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from factories import load_utility

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_all_trains_every_stage_and_brings_back_seven_files(tmp_path):
    out = tmp_path / "out"
    assert load_utility("train_all").main(["--out", str(out), "--tiny", "--workers", "1", "--device", "cpu"]) == 0
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

"""``Utilities/train_all.py``, the one script that trains every stage on a lent GPU machine, at a tiny CPU budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from factories import load_utility

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_all_trains_every_run_and_brings_back_few_files(tmp_path):
    out = tmp_path / "out"
    runs = ["localize", "localize-scratch", "segment", "keypoints"]
    assert load_utility("train_all").main(["--out", str(out), "--tiny", "--workers", "1", "--device", "cpu",
                                           "--runs", *runs]) == 0
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    assert files == sorted([f"{r}_best.pt" for r in runs] + ["train_all.json"])
    summary = json.loads((out / "train_all.json").read_text())
    for run in runs:
        r = summary["models"][run]
        assert r["exit"] == 0 and r["iterations"] == 2 and r["log"]
        assert ("--init" in r["command"]) == (run != "localize-scratch")
        state = torch.load(out / f"{run}_best.pt", weights_only=True)
        assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not (out / "runs").exists()


def test_train_all_refuses_an_unknown_run_or_missing_weights(tmp_path):
    ta = load_utility("train_all")
    with pytest.raises(SystemExit, match="RUN=WEIGHTS"):
        ta.main(["--out", str(tmp_path), "--init", "nonsense=x.pt"])
    with pytest.raises(SystemExit, match="no file"):
        ta.main(["--out", str(tmp_path), "--init", f"segment={tmp_path / 'missing.pt'}"])


@pytest.mark.slow
def test_profile_training_measures_both_stages_on_the_cpu(tmp_path):
    out = load_utility("profile_training").main(["--device", "cpu", "--cases", "2", "--work", str(tmp_path / "w"),
                                                 "--steps", "1", "--workers", "1"])
    for key in ("caching_s", "stage1_prepare_ms", "stage1_step_ms", "stage1_batches_per_s_1_workers",
                "stage2_prepare_ms", "stage2_step_ms", "stage2_batches_per_s_1_workers"):
        assert out[key] > 0

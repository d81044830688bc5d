"""SynthSpine's generator variants for real CT: real posterior elements (templates measured from a vertebra
mask and worn by a synthetic vertebra; the source mask is SynthSpine's own, procedural at 1 mm, so the
answers are known) and randomised appearance."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from VertebralFractureLib.errors import InputError
from VertebralFractureLib.synth import SynthConfig, generate_case, write_verse_case
from VertebralFractureLib.synth.spine import plan_spine
from VertebralFractureLib.synth.templates import load_bank, mask_files

SOURCE = SynthConfig(levels=("T12", "L4"), spacing=(1.0, 1.0, 1.0), fov=140.0, body=False, rotation_deg=(0, 0, 0),
                     p_cut=0.0, p_fractured_case=0.0, orientation="LPS")
TARGET = SynthConfig(levels=("L1", "L3"), spacing=(1.5, 1.5, 1.5), fov=140.0, body=False, p_cut=0.0,
                     p_fractured_case=0.0)


def _plan(seed: int, config: SynthConfig):
    """The plan generate_case draws first from its stream."""
    return plan_spine(np.random.default_rng(np.random.SeedSequence([seed, 0x5E5E])), config)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("masks")
    paths = write_verse_case(generate_case(11, SOURCE), root, "sub-synth0000")
    return root, paths["vertebra_mask"]


def test_a_template_measures_the_body_it_came_from(source):
    _, mask = source
    bank = load_bank((str(mask),))
    planned = {v.name: v for v in _plan(11, SOURCE).vertebrae}
    assert {"L1", "L2", "L3"} <= set(bank)
    for name in ("L1", "L2", "L3"):
        (t,) = bank[name]
        vt = planned[name]
        assert t.source.endswith(f":{vt.label}")
        assert abs(t.width - vt.width) < 3.0, (name, t.width, vt.width)
        assert abs(t.depth - (vt.depth - vt.post_concavity)) < 3.0, (name, t.depth, vt.depth)  # mid-sagittal
        assert abs(t.height - vt.hp) < 3.0, (name, t.height, vt.hp)
        # the posterior elements lie behind the body's posterior wall, and reach far behind it
        inside = np.argwhere(t.sdf <= 0)  # (w, v, u) indices
        v_mm = t.origin[1] + inside[:, 1]
        assert v_mm.min() >= t.back - 3.0
        assert v_mm.max() - t.back > 25.0  # the spinous process


def test_a_vertebra_wears_a_template_and_keeps_its_body(source):
    root, mask = source
    plain = generate_case(12, TARGET)
    worn = generate_case(12, TARGET.replace(templates=(str(root),)))
    assert set(worn.meta["templates"]) == {"L1", "L2", "L3"}
    assert plain.meta.get("templates") in ({}, None)
    assert worn.truth == plain.truth  # bodies, keypoints, heights and grades unchanged
    a, b = np.asarray(plain.labelmap.array), np.asarray(worn.labelmap.array)
    assert not np.array_equal(a, b)  # the posterior elements differ
    for label in (20, 21, 22):  # a template made from a vertebra of the same generator: a similar volume
        ratio = np.count_nonzero(b == label) / np.count_nonzero(a == label)
        assert 0.75 < ratio < 1.3, (label, ratio)
    again = generate_case(12, TARGET.replace(templates=(str(root),)))
    assert np.array_equal(again.ct.array, worn.ct.array)  # deterministic


def test_the_cli_refuses_missing_or_empty_template_folders(tmp_path):
    from VertebralFractureLib.synth.cli import _config, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(InputError, match="not found"):
        _config(parser.parse_args(["-o", str(tmp_path / "o"), "--templates", str(tmp_path / "none")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no vertebra masks"):
        _config(parser.parse_args(["-o", str(tmp_path / "o"), "--templates", str(tmp_path / "empty")]))
    assert mask_files((str(tmp_path / "empty"),)) == []
    ct = tmp_path / "sub-x_seg-vert_msk.nii.gz"  # a CT given where a mask belongs
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.arange(-500, 500, dtype=np.int16).reshape(10, 10, 10)), str(ct))
    with pytest.raises(InputError, match="not a vertebra label map"):
        _config(parser.parse_args(["-o", str(tmp_path / "o"), "--templates", str(ct)]))


def test_randomised_appearance_changes_intensities_only():
    from VertebralFractureLib.synth.appearance import draw_appearance, randomise
    from VertebralFractureLib.synth.tissues import Tissue

    plain = generate_case(12, TARGET)
    wild = generate_case(12, TARGET.replace(p_random_appearance=1.0))
    assert wild.meta["random_appearance"] and not plain.meta["random_appearance"]
    assert wild.truth == plain.truth and np.array_equal(wild.labelmap.array, plain.labelmap.array)
    assert not np.array_equal(wild.ct.array, plain.ct.array)
    # over many draws, the bone contrasts leave the realistic table's range, air stays air
    app = draw_appearance(np.random.default_rng(0), False, False, 50.0, (10.0, 10.0))
    rng = np.random.default_rng(1)
    draws = [randomise(app, rng) for _ in range(200)]
    ratio = np.array([d.mean[Tissue.CORTICAL] / d.mean[Tissue.TRABECULAR] for d in draws])
    assert ratio.min() < 0.8 * app.mean[Tissue.CORTICAL] / app.mean[Tissue.TRABECULAR] < ratio.max()
    assert all(d.mean[Tissue.AIR] == app.mean[Tissue.AIR] for d in draws)
    with pytest.raises(ValueError, match="p_random_appearance"):
        SynthConfig(p_random_appearance=1.5)


def test_the_body_split_of_a_mask_follows_the_posterior_wall(source):
    """vertebra_parts.body_mask on SynthSpine's own mask: the split lies at the body's posterior wall,
    known from the truth's posterior keypoints (voxels within 2 mm of the wall are not judged)."""
    import json

    from VertebralFractureLib.io.readers import read_labelmap
    from VertebralFractureLib.vertebra_parts import body_mask

    root, mask_path = source
    labelmap = read_labelmap(mask_path)
    body, labels = body_mask(labelmap)
    assert {20, 21, 22} <= set(labels)
    truth_file = next((root / "derivatives" / "sub-synth0000").glob("*genant*.json"))
    truth = {e["label"]: e for e in json.loads(truth_file.read_text())}
    arr = np.asarray(labelmap.array)
    for label in (20, 21, 22):
        kp = {k: np.asarray(v) for k, v in truth[label]["keypoints_lps_mm"].items()}
        front = 0.5 * (kp["A_sup"] + kp["A_inf"])
        back = 0.5 * (kp["P_sup"] + kp["P_inf"])
        axis = (back - front) / np.linalg.norm(back - front)
        zyx = np.argwhere(arr == label)
        depth = (labelmap.zyx_to_lps(zyx) - back) @ axis  # mm behind the posterior wall
        judged = np.abs(depth) > 2.0
        found = body[tuple(zyx.T)]
        agree = np.mean(found[judged] == (depth[judged] < 0))
        assert agree > 0.95, (label, agree)
        assert 0.4 < found.mean() < 0.8, (label, found.mean())

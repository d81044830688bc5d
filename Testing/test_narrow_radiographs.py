"""Utilities/narrow_radiographs.py: narrow views of a labelled radiograph dataset."""

from __future__ import annotations

import json

import numpy as np


def test_narrow_views_cut_the_images_to_the_bodies_and_move_the_boxes(tmp_path):
    from factories import load_utility, tiny_verse_folder

    from VertebralFractureLib.training.radiograph_data import read_dataset, write_dataset

    src = write_dataset([tiny_verse_folder(tmp_path / "synth", n_cases=1)], tmp_path / "rad", per_case=2, seed=1).parent
    before = (src / "radiographs.json").read_bytes()
    tool = load_utility("narrow_radiographs")
    assert tool.main([str(src), str(tmp_path / "narrow"), "--margin-mm", "4"]) == 0
    assert (src / "radiographs.json").read_bytes() == before  # the source is only read
    wide, narrow = read_dataset(src), read_dataset(tmp_path / "narrow")
    for w, n in zip(wide, narrow):
        c0, c1 = n["narrowed"]["columns"]
        assert n["image"].shape == (w["image"].shape[0], c1 - c0) and c1 - c0 < w["image"].shape[1]
        assert np.array_equal(n["image"], w["image"][:, c0:c1])  # the same pixels, cut
        for vw, vn in zip(w["vertebrae"], n["vertebrae"]):
            assert vn["name"] == vw["name"] and vn["box_px"][1::2] == vw["box_px"][1::2]
            assert np.allclose(vn["box_px"][0::2], np.array(vw["box_px"][0::2]) - c0, atol=0.01)
            assert 0 <= vn["box_px"][0] and vn["box_px"][2] <= c1 - c0  # whole, inside the view


def test_narrowing_refuses_to_write_over_a_dataset(tmp_path):
    import pytest
    from factories import load_utility

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "radiographs.json").write_text(json.dumps({"radiographs": []}))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "radiographs.json").write_text(json.dumps({"radiographs": []}))
    with pytest.raises(SystemExit):
        load_utility("narrow_radiographs").main([str(tmp_path / "src"), str(tmp_path / "out")])

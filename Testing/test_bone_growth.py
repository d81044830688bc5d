"""Stage 2's outlines completed into the bone they touch (VertebralFractureLib.bone_growth)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from VertebralFractureLib import bone_growth, segment
from VertebralFractureLib.volume import Volume

LABELS = (21, 22, 23)  # L2, L3, L4: cranial to caudal
GAP_MM = 30.0  # centre to centre


def toy_spine(spacing_z: float = 1.0) -> tuple[Volume, np.ndarray, dict[str, np.ndarray]]:
    """Three vertebrae along z (LPS: x left, y posterior, z superior), the network's outline = the bodies.

    Each has a body (HU 300), a spinous process behind it (a cortical bar, HU 800, with a marrow
    core of HU 50 enclosed) and transverse processes; an 'aorta' (HU 300) touches the first body in
    front, a 'sacrum' block touches the last vertebra's process from below, and the processes of the
    first two vertebrae are bridged by a 'facet' bar."""
    sp = np.array([spacing_z, 1.0, 1.0])  # z, y, x
    shape = (int(round(110 / spacing_z)), 90, 110)
    z = (np.arange(shape[0]) * sp[0])[:, None, None]
    y = (np.arange(shape[1]) - 30.0)[None, :, None]  # body centre at y = 0
    x = (np.arange(shape[2]) - 55.0)[None, None, :]
    hu = np.full(shape, 0.0, np.float32)
    labels = np.zeros(shape, np.uint8)
    parts = {}
    centres = {21: 85.0, 22: 55.0, 23: 25.0}
    for lab, zc in centres.items():
        body = (np.abs(x) <= 20) & (np.abs(y) <= 15) & (np.abs(z - zc) <= 10)
        hu[body] = 300
        labels[body] = lab
        spinous = (np.abs(x) <= 4) & (y > 15) & (y <= 50) & (np.abs(z - zc) <= 5)
        core = (np.abs(x) <= 1.5) & (y > 20) & (y <= 45) & (np.abs(z - zc) <= 2)
        transverse = (np.abs(x) <= 40) & (y > 15) & (y <= 20) & (np.abs(z - zc) <= 3)
        hu[spinous | transverse] = 800
        hu[core] = 50
        parts[f"process{lab}"] = (spinous | transverse) & ~core
        parts[f"core{lab}"] = core
    aorta = (np.abs(x - 10) <= 8) & (y >= -30) & (y < -15) & (np.abs(z - 85) <= 20)
    hu[aorta] = 300
    parts["aorta"] = aorta
    sacrum = (np.abs(x) <= 20) & (y > 30) & (y <= 50) & (z < 9)  # the last midpoint lies at z = 10
    bridge = (np.abs(x) <= 4) & (y > 30) & (y <= 50) & (z >= 9) & (z < 20)
    hu[sacrum | bridge] = 400
    parts["sacrum"] = sacrum & (z < 8)  # one voxel off for the smoothing
    facet = (np.abs(x) <= 2) & (y > 40) & (y <= 44) & (z > 60) & (z < 80)
    hu[facet] = 800
    parts["facet_upper"] = facet & (z > 72)  # nearer the first vertebra's process
    parts["facet_lower"] = facet & (z < 63)  # nearer the second one's
    volume = Volume(hu, spacing=(1.0, 1.0, spacing_z), origin=(-55.0, -30.0, 0.0))
    return volume, labels, parts


def grow(volume: Volume, labels: np.ndarray, **kw) -> np.ndarray:
    return bone_growth.grow_into_bone(labels, volume.array, tuple(volume.spacing[::-1]), volume.zyx_to_lps, **kw)


@pytest.mark.parametrize("spacing_z", [1.0, 3.0])
def test_processes_are_taken_by_their_own_vertebra(spacing_z):
    volume, labels, parts = toy_spine(spacing_z)
    out = grow(volume, labels)
    assert np.array_equal(out[labels > 0], labels[labels > 0]), "the network's voxels keep their labels"
    for lab in LABELS:
        process = parts[f"process{lab}"]
        assert process.any()
        share = float(np.mean(out[process] == lab))
        assert share > 0.97, (lab, share)
        assert not np.isin(out[process], [k for k in LABELS if k != lab]).any()


def test_enclosed_marrow_is_filled_and_nothing_else_is():
    volume, labels, parts = toy_spine()
    out = grow(volume, labels)
    for lab in LABELS:
        assert np.all(out[parts[f"core{lab}"]] == lab)
    from scipy import ndimage

    bone = (volume.array >= bone_growth.HU) | (labels > 0)
    fringe = ndimage.binary_dilation(bone)  # the smoothing before the threshold may take one voxel more
    enclosed = np.zeros_like(bone)
    for lab in LABELS:
        enclosed |= parts[f"core{lab}"]
    assert not out[~fringe & ~enclosed].any(), "soft tissue away from the bone is never labelled"


def test_no_growth_in_front_of_the_vertebra_nor_past_an_open_end():
    volume, labels, parts = toy_spine()
    out = grow(volume, labels)
    assert not out[parts["aorta"]].any(), "bright tissue in front of the body is not the vertebra"
    assert not out[parts["sacrum"]].any(), "the last vertebra stops at the midpoint on its open side"


def test_bone_between_two_vertebrae_is_split_where_the_fronts_meet():
    volume, labels, parts = toy_spine()
    out = grow(volume, labels)
    assert np.all(out[parts["facet_upper"]] == 21)
    assert np.all(out[parts["facet_lower"]] == 22)


def test_threshold_and_reach_limit_the_growth():
    volume, labels, parts = toy_spine()
    assert np.array_equal(grow(volume, labels, hu_threshold=900.0), labels), "nothing is bone above 900 HU"
    short = grow(volume, labels, max_mm=10.0)
    tip = parts["process22"] & (np.arange(90)[None, :, None] - 30.0 > 35)  # > 20 mm behind the back wall
    assert not short[tip].any()
    near = (np.arange(90)[None, :, None] - 30.0 <= 20) & (np.abs(np.arange(110) - 55.0)[None, None, :] <= 20)
    assert np.all(short[parts["process22"] & near] == 22)


def test_a_vertebra_with_a_rib_keeps_the_network_outline():
    volume, labels, parts = toy_spine()
    z = (np.arange(labels.shape[0]) * 1.0)[:, None, None]
    y = (np.arange(90) - 30.0)[None, :, None]
    x = (np.arange(110) - 55.0)[None, None, :]
    rib = (x > 20) & (x <= 54) & (np.abs(y - 10) <= 4) & (np.abs(z - 55) <= 4)  # from L3's body out sideways
    hu = volume.array.copy()
    hu[rib & (labels == 0)] = 700
    out = grow(volume.with_array(hu), labels)
    assert (out == 22).sum() == (labels == 22).sum(), "L3 follows its rib no further"
    assert not out[rib & (labels == 0)].any()
    for lab in (21, 23):  # its neighbours still grow, and do not take L3's processes
        assert np.mean(out[parts[f"process{lab}"]] == lab) > 0.97
    assert not np.isin(out[parts["process22"]], [21, 23]).any()


def test_cervical_vertebrae_keep_the_network_outline():
    volume, labels, _ = toy_spine()
    cervical = np.select([labels == 21, labels == 22, labels == 23], [4, 5, 6], 0).astype(np.uint8)  # C4-C6
    assert np.array_equal(grow(volume, cervical), cervical)
    assert (grow(volume, cervical, kept=[4, 5, 6]) > 0).sum() > (cervical > 0).sum()


def test_labels_not_kept_compete_but_keep_their_outline():
    volume, labels, parts = toy_spine()
    out = grow(volume, labels, kept=[22, 23])
    assert (out == 21).sum() == (labels == 21).sum()
    assert not out[parts["process21"]].any(), "nor does L3 take L2's process"
    assert np.all(out[parts["facet_upper"]] == 0) and np.all(out[parts["facet_lower"]] == 22)
    assert np.mean(out[parts["process22"]] == 22) > 0.97


def test_the_given_centres_set_the_frame():
    volume, labels, parts = toy_spine()
    # an outline that strays into the aorta moves its centre of mass forward, not the given centre
    strayed = labels.copy()
    strayed[parts["aorta"]] = 21
    cents = {lab: volume.zyx_to_lps(np.argwhere(labels == lab).mean(0)) for lab in LABELS}
    out = grow(volume, strayed, centroids_lps=cents)
    assert np.mean(out[parts["process21"]] == 21) > 0.97


def test_empty_and_lone_outlines():
    volume, labels, _ = toy_spine()
    empty = np.zeros_like(labels)
    assert not grow(volume, empty).any()
    lone = np.where(labels == 22, 22, 0).astype(np.uint8)
    out = grow(volume, lone)
    assert set(np.unique(out)) == {0, 22}
    assert (out == 22).sum() > (lone == 22).sum()


def test_the_cards_settings_are_used():
    volume, labels, _ = toy_spine()
    card = SimpleNamespace(postprocess={"bone_growth": {"hu": 900.0}})
    assert np.array_equal(segment.grow_outlines(labels, volume, card), labels)
    default = segment.grow_outlines(labels, volume, SimpleNamespace(postprocess={}))
    assert (default > 0).sum() > (labels > 0).sum()

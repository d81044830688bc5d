"""The Volume: geometry maps, file round trips (NIfTI/NRRD/MHA, oblique too), resampling, validation."""

from __future__ import annotations

import numpy as np
import pytest
from factories import oblique_direction

from VertebralFractureLib.io.readers import read_image, read_labelmap, write_volume
from VertebralFractureLib.volume import Volume, lps_to_ras

# a realistic CT position far from the origin: float32 storage (NIfTI) loses ~1e-5 mm there
ORIGIN = (-249.51171875, -437.51171875, -804.5)
SPACING = (0.810547, 0.7, 1.25)


def oblique_volume(dtype=np.int16, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1024, 2000, size=(9, 11, 13)).astype(dtype)
    return Volume(array, SPACING, ORIGIN, oblique_direction(20.0))


# ----------------------------------------------------------------------------------- file round trips
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_oblique_volume_round_trips_through_files(tmp_path, suffix):
    vol = oblique_volume()
    path = tmp_path / f"ct{suffix}"
    write_volume(vol, path)
    back = read_image(path).volume
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.array.dtype == np.int16
    np.testing.assert_allclose(back.spacing, vol.spacing, atol=1e-4)
    np.testing.assert_allclose(back.origin, vol.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-4)
    if suffix != ".nii.gz":  # NRRD and MetaImage store text doubles: exact
        np.testing.assert_allclose(back.origin, vol.origin, atol=1e-9)
        np.testing.assert_allclose(back.direction, vol.direction, atol=1e-12)
    # the corner voxel lands within 1e-4 mm of where it was: the whole grid is kept, not just its parts
    corner = np.array(vol.shape_xyz) - 1
    assert np.linalg.norm(back.index_to_lps(corner) - vol.index_to_lps(corner)) < 1e-4


def test_nifti_on_disk_is_ras_and_matches_lps(tmp_path):
    """What other tools see: the NIfTI affine is the LPS affine with x and y negated (RAS)."""
    nib = pytest.importorskip("nibabel")
    vol = oblique_volume()
    write_volume(vol, tmp_path / "ct.nii.gz")
    img = nib.load(tmp_path / "ct.nii.gz")
    ras_from_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    expected = ras_from_lps @ vol.affine_lps
    np.testing.assert_allclose(img.get_sform(), expected, atol=1e-4)
    np.testing.assert_allclose(img.get_qform(), expected, atol=1e-4)
    # nibabel's array is (x, y, z); ours is (z, y, x)
    np.testing.assert_array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), vol.array)


def test_labelmap_round_trip_stays_integer(tmp_path):
    import SimpleITK as sitk

    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1:3, 2:5, 3:6] = 20
    labels[4, 1, 1] = 255
    vol = Volume(labels, SPACING, ORIGIN, oblique_direction(10.0))
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        path = tmp_path / f"lab{suffix}"
        write_volume(vol, path)
        assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt8
        back = read_labelmap(path, reference=vol)
        assert back.array.dtype == np.uint8
        np.testing.assert_array_equal(back.array, labels)


# ----------------------------------------------------------------------------------- geometry maps
def test_index_to_lps_formula_and_round_trip():
    vol = oblique_volume()
    rng = np.random.default_rng(1)
    ijk = rng.uniform(-5, 20, size=(50, 3))
    lps = vol.index_to_lps(ijk)
    expected = np.asarray(ORIGIN) + (vol.direction @ (np.asarray(SPACING)[:, None] * ijk.T)).T
    np.testing.assert_allclose(lps, expected, atol=1e-9)
    np.testing.assert_allclose(vol.lps_to_index(lps), ijk, atol=1e-9)
    # numpy's (z, y, x) order gives the same points
    np.testing.assert_allclose(vol.zyx_to_lps(ijk[:, ::-1]), lps, atol=1e-9)
    # one step along the array's last axis moves spacing[0] mm along the first direction column
    step = vol.zyx_to_lps([0, 0, 1]) - vol.zyx_to_lps([0, 0, 0])
    np.testing.assert_allclose(step, SPACING[0] * vol.direction[:, 0], atol=1e-12)


def test_lps_to_ras_flips_x_and_y():
    np.testing.assert_array_equal(lps_to_ras([[1.0, 2.0, 3.0]]), [[-1.0, -2.0, 3.0]])


def test_sitk_conversion_keeps_geometry():
    vol = oblique_volume()
    back = Volume.from_sitk(vol.to_sitk())
    assert back.same_geometry(vol, tol=1e-12)
    np.testing.assert_array_equal(back.array, vol.array)


# ----------------------------------------------------------------------------------- resampling
def _blob(vol_like: Volume, centre_lps: np.ndarray, sigma_mm: float = 2.0) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in vol_like.array.shape], indexing="ij")
    world = vol_like.index_to_lps(np.stack([xx, yy, zz], -1).astype(float))
    return 1000.0 * np.exp(-np.sum((world - centre_lps) ** 2, axis=-1) / (2 * sigma_mm**2))


def test_resample_to_spacing_keeps_a_bright_point_in_place():
    shape = (30, 34, 38)
    base = Volume(np.zeros(shape, np.float32), (0.8, 0.9, 1.2), (10.0, -20.0, 30.0), oblique_direction(25.0))
    centre = base.zyx_to_lps([13.3, 17.6, 21.2])
    vol = base.with_array(_blob(base, centre).astype(np.float32))
    new_spacing = (1.6, 2.0, 2.5)
    out = vol.resample_to_spacing(new_spacing)
    assert out.spacing == pytest.approx(new_spacing)
    np.testing.assert_allclose(out.direction, vol.direction)
    # same field of view: the first voxel's outer corner stays put
    corner_in = vol.index_to_lps([-0.5, -0.5, -0.5])
    corner_out = out.index_to_lps([-0.5, -0.5, -0.5])
    np.testing.assert_allclose(corner_out, corner_in, atol=1e-6)
    # the brightest voxel is within half a voxel of the point, along each axis
    peak = np.array(np.unravel_index(np.argmax(out.array), out.array.shape))[::-1]
    offset_idx = out.lps_to_index(centre) - peak
    assert np.all(np.abs(offset_idx) <= 0.5 + 1e-9), offset_idx
    # and the intensity-weighted centre is within a tenth of a new voxel
    w = out.array.astype(float)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in w.shape], indexing="ij")
    com = out.index_to_lps([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum(), (w * zz).sum() / w.sum()])
    assert np.linalg.norm(com - centre) < 0.1 * min(new_spacing)


def test_resample_like_nearest_keeps_labels():
    labels = np.zeros((20, 22, 24), np.uint8)
    labels[4:9, 5:15, 6:12] = 3
    labels[10:16, 5:15, 6:12] = 7
    labels[2, 2, 2] = 20
    src = Volume(labels, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), oblique_direction(15.0))
    # a finer grid on the same field of view
    ref = src.resample_to_spacing((0.5, 0.5, 1.0), interpolation="nearest")
    out = src.resample_like(ref, interpolation="nearest")
    assert out.same_geometry(ref)
    assert set(np.unique(out.array)) == {0, 3, 7, 20}  # no blended values
    for label in (3, 7):
        c_src = src.zyx_to_lps(np.argwhere(labels == label).mean(axis=0))
        c_out = out.zyx_to_lps(np.argwhere(out.array == label).mean(axis=0))
        assert np.linalg.norm(c_out - c_src) < 0.5
        # volume (mm³) is kept
        v_src = (labels == label).sum() * np.prod(src.spacing)
        v_out = (out.array == label).sum() * np.prod(out.spacing)
        assert v_out == pytest.approx(v_src, rel=1e-6)


def test_resample_rejects_bad_arguments():
    vol = oblique_volume()
    with pytest.raises(ValueError, match="spacing must be positive"):
        vol.resample_to_spacing((1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        vol.resample_to_spacing(1.0, interpolation="cubic")


# ----------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"array": np.zeros((4, 5))}, "needs a 3D array"),
        ({"array": np.zeros((2, 3, 4, 5))}, "needs a 3D array"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be 3 positive numbers"),
        ({"spacing": (1.0, -1.0, 1.0)}, "spacing must be 3 positive numbers"),
        ({"spacing": (1.0, 1.0)}, "spacing must be 3 positive numbers"),
        ({"spacing": (1.0, np.nan, 1.0)}, "spacing must be 3 positive numbers"),
        ({"origin": (0.0, np.inf, 0.0)}, "origin must be 3 finite numbers"),
        ({"origin": (0.0, 0.0)}, "origin must be 3 finite numbers"),
        ({"direction": np.diag([1.0, 2.0, 1.0])}, "orthonormal"),
        ({"direction": np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])}, "orthonormal"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    args = {"array": np.zeros((3, 4, 5))} | kwargs
    with pytest.raises(ValueError, match=message):
        Volume(**args)


def test_with_array_requires_the_same_shape():
    vol = oblique_volume()
    with pytest.raises(ValueError, match="differs from the volume's"):
        vol.with_array(np.zeros((2, 2, 2)))

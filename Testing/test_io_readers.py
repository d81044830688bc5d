"""read_image / read_labelmap / write_volume: formats, dtypes, bad inputs, labelmap geometry checks."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from factories import oblique_direction

from VertebralFractureLib.errors import InputError
from VertebralFractureLib.io.readers import (
    LABELMAP_GEOMETRY_TOLERANCE_MM,
    LoadedImage,
    read_image,
    read_labelmap,
    write_volume,
)
from VertebralFractureLib.volume import Volume


def ct_volume(shape=(6, 7, 8), dtype=np.int16) -> Volume:
    rng = np.random.default_rng(3)
    return Volume(rng.integers(-1024, 1500, size=shape).astype(dtype), (0.7, 0.8, 2.5), (12.5, -40.0, 300.0),
                  oblique_direction(30.0))


def write_sitk(image, path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(image, str(path))


# ----------------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    ("name", "fmt", "word"),
    [("ct.nii.gz", "nifti", "NIfTI"), ("ct.nii", "nifti", "NIfTI"), ("ct.nrrd", "nrrd", "NRRD"),
     ("ct.nhdr", "nrrd", "NRRD"), ("ct.mha", "mha", "MetaImage"), ("ct.mhd", "mha", "MetaImage")],
)
def test_read_each_volume_format(tmp_path, name, fmt, word):
    vol = ct_volume()
    write_sitk(vol.to_sitk(), tmp_path / name)
    loaded = read_image(tmp_path / name)
    assert isinstance(loaded, LoadedImage)
    assert loaded.source_format == fmt
    assert loaded.warnings == []
    assert loaded.description == f"{word} image, 8×7×6 voxels of 0.700×0.800×2.500 mm, int16"
    np.testing.assert_array_equal(loaded.volume.array, vol.array)
    assert loaded.volume.same_geometry(vol, tol=1e-4)


def test_format_found_from_content_without_suffix(tmp_path):
    vol = ct_volume()
    write_sitk(vol.to_sitk(), tmp_path / "ct.nrrd")
    (tmp_path / "ct.nrrd").rename(tmp_path / "scan")
    loaded = read_image(tmp_path / "scan")
    assert loaded.source_format == "nrrd"
    np.testing.assert_array_equal(loaded.volume.array, vol.array)


@pytest.mark.parametrize(
    ("dtype", "values", "expected"),
    [
        (np.uint8, (0, 255), np.int16),
        (np.int32, (-1024, 3071), np.int16),
        (np.uint16, (0, 40000), np.int32),
        (np.float64, (-1024.5, 3000.25), np.float32),
        (np.float32, (-1.0, 1.0), np.float32),
    ],
)
def test_values_are_kept_in_a_sensible_dtype(tmp_path, dtype, values, expected):
    array = np.zeros((3, 4, 5), dtype=dtype)
    array.flat[0], array.flat[-1] = values
    write_volume(Volume(array), tmp_path / "v.nrrd")
    back = read_image(tmp_path / "v.nrrd").volume
    assert back.array.dtype == expected
    assert (back.array.flat[0], back.array.flat[-1]) == pytest.approx(values)  # never rescaled


def test_nifti_beside_a_same_named_nii_reads_the_right_file(tmp_path):
    """ITK alone reads scan.nii when asked for scan.nii.gz."""
    a, b = ct_volume(), ct_volume()
    b = b.with_array(b.array + 7)
    write_volume(a, tmp_path / "scan.nii")
    write_volume(b, tmp_path / "scan.nii.gz")
    np.testing.assert_array_equal(read_image(tmp_path / "scan.nii.gz").volume.array, b.array)
    np.testing.assert_array_equal(read_image(tmp_path / "scan.nii").volume.array, a.array)


def test_single_time_point_4d_is_read_as_3d(tmp_path):
    import SimpleITK as sitk

    vol = ct_volume()
    img4 = sitk.JoinSeries([vol.to_sitk()])
    write_sitk(img4, tmp_path / "t.nrrd")
    loaded = read_image(tmp_path / "t.nrrd")
    np.testing.assert_array_equal(loaded.volume.array, vol.array)
    assert loaded.warnings == ["'t.nrrd' is stored as 4D with a single time point; read as 3D"]


# ----------------------------------------------------------------------------------- bad inputs
def test_missing_path(tmp_path):
    with pytest.raises(InputError, match=r"input not found: .*nothing\.nii\.gz' does not exist"):
        read_image(tmp_path / "nothing.nii.gz")


def test_unknown_format(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(InputError, match=r"unknown image format: 'photo.png'. Supported: NIfTI"):
        read_image(tmp_path / "photo.png")


@pytest.mark.parametrize("name", ["bad.nii.gz", "bad.nrrd", "bad.mha"])
def test_unreadable_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"this is not an image\n" * 20)
    with pytest.raises(InputError, match=f"cannot read '{name}'"):
        read_image(tmp_path / name)


@pytest.mark.parametrize("name", ["cut.nii", "cut.nii.gz"])
def test_truncated_nifti_is_refused(tmp_path, name):
    """ITK reads a truncated NIfTI silently with zeros in place of the lost voxels."""
    vol = ct_volume(shape=(30, 40, 50))
    write_volume(vol, tmp_path / "full.nii")
    data = (tmp_path / "full.nii").read_bytes()
    cut = data[: len(data) * 2 // 3]
    (tmp_path / name).write_bytes(gzip.compress(cut) if name.endswith(".gz") else cut)
    with pytest.raises(InputError, match=rf"'{name}' is truncated: its header needs 120352 bytes"):
        read_image(tmp_path / name)


def test_truncated_gzip_stream_is_refused(tmp_path):
    vol = ct_volume(shape=(30, 40, 50))
    write_volume(vol, tmp_path / "full.nii.gz")
    data = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match="'cut.nii.gz' is damaged or truncated"):
        read_image(tmp_path / "cut.nii.gz")


def test_2d_image(tmp_path):
    import SimpleITK as sitk

    write_sitk(sitk.Image([5, 6], sitk.sitkInt16), tmp_path / "slice.mha")
    with pytest.raises(InputError, match=r"'slice.mha' is a 2D image \(size 5×6\); a 3D volume is needed"):
        read_image(tmp_path / "slice.mha")


def test_single_slice_3d_image(tmp_path):
    write_volume(Volume(np.zeros((1, 6, 5), np.int16)), tmp_path / "thin.nii.gz")
    with pytest.raises(InputError, match=r"'thin.nii.gz' holds a single slice \(size 5×6×1\)"):
        read_image(tmp_path / "thin.nii.gz")


def test_rgb_image(tmp_path):
    import SimpleITK as sitk

    write_sitk(sitk.Image([5, 6, 7], sitk.sitkVectorUInt8, 3), tmp_path / "rgb.nrrd")
    with pytest.raises(InputError, match=r"'rgb.nrrd' is a multi-component image \(3 values per voxel, e.g. RGB\)"):
        read_image(tmp_path / "rgb.nrrd")


def test_4d_image(tmp_path):
    import SimpleITK as sitk

    write_sitk(sitk.Image([5, 6, 7, 2], sitk.sitkInt16), tmp_path / "dyn.nii.gz")
    with pytest.raises(InputError, match=r"'dyn.nii.gz' is a 4D image \(size 5×6×7×2\); a 3D volume is needed"):
        read_image(tmp_path / "dyn.nii.gz")


def test_non_orthonormal_nifti(tmp_path):
    nib = pytest.importorskip("nibabel")
    affine = np.eye(4)
    affine[0, 1] = 0.5  # sheared
    img = nib.Nifti1Image(np.zeros((5, 6, 7), np.int16), None)
    img.set_sform(affine, code=1)
    img.set_qform(None, code=0)
    nib.save(img, tmp_path / "shear.nii.gz")
    with pytest.raises(InputError, match="cannot read 'shear.nii.gz' as NIfTI: .*orthonormal"):
        read_image(tmp_path / "shear.nii.gz")


# ----------------------------------------------------------------------------------- labelmaps
def test_labelmap_stored_as_float_becomes_integer(tmp_path):
    labels = np.zeros((4, 5, 6), np.float32)
    labels[1, 2, 3], labels[2, 2, 2] = 20.0, 300.0
    write_volume(Volume(labels), tmp_path / "lab.nii.gz")
    back = read_labelmap(tmp_path / "lab.nii.gz")
    assert back.array.dtype == np.uint16
    assert back.array[1, 2, 3] == 20 and back.array[2, 2, 2] == 300


def test_labelmap_small_labels_are_uint8(tmp_path):
    labels = np.zeros((4, 5, 6), np.int32)
    labels[1, 2, 3] = 25
    write_volume(Volume(labels), tmp_path / "lab.nrrd")
    assert read_labelmap(tmp_path / "lab.nrrd").array.dtype == np.uint8


def test_labelmap_with_fractions_is_refused(tmp_path):
    write_volume(Volume(np.full((3, 4, 5), 0.5, np.float32)), tmp_path / "prob.nii.gz")
    with pytest.raises(InputError, match=r"labelmap 'prob.nii.gz' has non-integer values \(e.g. 0.5\)"):
        read_labelmap(tmp_path / "prob.nii.gz")


def test_ct_given_as_labelmap_is_refused(tmp_path):
    write_volume(ct_volume(), tmp_path / "ct.nii.gz")
    with pytest.raises(InputError, match=r"labelmap 'ct.nii.gz' has negative values \(minimum -\d+\)"):
        read_labelmap(tmp_path / "ct.nii.gz")


def test_labelmap_on_the_reference_grid(tmp_path):
    ref = ct_volume()
    labels = ref.with_array((ref.array > 500).astype(np.uint8))
    write_volume(labels, tmp_path / "lab.nii.gz")  # float32 header: ~1e-5 mm off the reference
    back = read_labelmap(tmp_path / "lab.nii.gz", reference=ref)
    assert back.spacing == ref.spacing and back.origin == ref.origin  # adopted exactly
    np.testing.assert_array_equal(back.direction, ref.direction)
    np.testing.assert_array_equal(back.array, labels.array)


def test_labelmap_within_tolerance_adopts_the_reference(tmp_path):
    ref = ct_volume()
    shifted = Volume(np.zeros(ref.array.shape, np.uint8), ref.spacing,
                     tuple(np.add(ref.origin, [0.0, 0.5 * LABELMAP_GEOMETRY_TOLERANCE_MM, 0.0])), ref.direction)
    write_volume(shifted, tmp_path / "lab.nrrd")
    back = read_labelmap(tmp_path / "lab.nrrd", reference=ref)
    assert back.origin == ref.origin


@pytest.mark.parametrize(
    "change",
    ["origin", "spacing", "direction"],
)
def test_labelmap_off_the_reference_grid_is_refused(tmp_path, change):
    ref = ct_volume()
    spacing, origin, direction = ref.spacing, ref.origin, ref.direction
    if change == "origin":
        origin = tuple(np.add(origin, [0.0, 0.0, 0.01]))
    elif change == "spacing":
        spacing = (spacing[0], spacing[1], spacing[2] + 0.001)  # 0.005 mm off at the last slice
    else:
        direction = oblique_direction(30.05)
    write_volume(Volume(np.zeros(ref.array.shape, np.uint8), spacing, origin, direction), tmp_path / "lab.nrrd")
    with pytest.raises(InputError, match=r"labelmap 'lab.nrrd' is not on the image's voxel grid: voxel positions "
                                         r"differ by up to [\d.e-]+ mm \(allowed 0.001 mm\)"):
        read_labelmap(tmp_path / "lab.nrrd", reference=ref)


def test_labelmap_of_another_size_is_refused(tmp_path):
    ref = ct_volume()
    write_volume(Volume(np.zeros((3, 3, 3), np.uint8)), tmp_path / "lab.nrrd")
    with pytest.raises(InputError, match=r"has size 3×3×3 but the image has size 8×7×6"):
        read_labelmap(tmp_path / "lab.nrrd", reference=ref)


def test_missing_labelmap(tmp_path):
    with pytest.raises(InputError, match="labelmap not found"):
        read_labelmap(tmp_path / "none.nii.gz")


# ----------------------------------------------------------------------------------- writing
def test_write_keeps_integer_types(tmp_path):
    import SimpleITK as sitk

    cases = {
        "bool.nii.gz": (np.ones((2, 3, 4), bool), sitk.sitkUInt8),
        "i64.nrrd": (np.full((2, 3, 4), 70000, np.int64), sitk.sitkInt32),
        "u16.mha": (np.full((2, 3, 4), 60000, np.uint16), sitk.sitkUInt16),
    }
    for name, (array, pixel) in cases.items():
        write_volume(Volume(array), tmp_path / "sub" / name)  # parent folder created
        assert sitk.ReadImage(str(tmp_path / "sub" / name)).GetPixelID() == pixel, name


def test_write_compression_flag(tmp_path):
    vol = Volume(np.zeros((20, 30, 40), np.int16))
    write_volume(vol, tmp_path / "small.nrrd", compress=True)
    write_volume(vol, tmp_path / "big.nrrd", compress=False)
    assert (tmp_path / "small.nrrd").stat().st_size < (tmp_path / "big.nrrd").stat().st_size / 10
    write_volume(vol, tmp_path / "always.nii.gz", compress=False)
    assert (tmp_path / "always.nii.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip magic


def test_write_unsupported_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"cannot write 'out.png': the file name must end with one of"):
        write_volume(Volume(np.zeros((2, 2, 2))), tmp_path / "out.png")

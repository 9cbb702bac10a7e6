"""bmstudy.io.volumes: readers for NIfTI / NRRD / MHA / DICOM series, canonical orientation, input errors."""
from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from bmstudy.io.volumes import (VolumeError, canonical_to_source, fingerprint_unchanged, input_fingerprint, read_volume,
                        write_volume)

SimpleITK = pytest.importorskip("SimpleITK", reason="SimpleITK is a core dependency of bmstudy.io.volumes")


def lps_affine(spacing=(0.9, 0.9, 1.5), origin=(100.0, 120.0, -60.0)) -> np.ndarray:
    """Affine of an LPS-stored volume (axis 0 -> left, axis 1 -> posterior), RAS world."""
    a = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    a[:3, 3] = origin
    return a


def oblique_affine() -> np.ndarray:
    th = np.deg2rad(12.0)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([-1.1, 0.95, 2.0])
    a[:3, 3] = [30.0, -20.0, 5.0]
    return a


def test_nifti_canonical_matches_nibabel(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 8, 5)).astype(np.float32)
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(data, oblique_affine()), path)
    vol = read_volume(path, case="c1")
    ref = nib.as_closest_canonical(nib.load(path))
    np.testing.assert_array_equal(vol.data, ref.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-6)
    assert vol.source_shape == (7, 8, 5)
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(canonical_to_source(vol.data, vol.source_affine), data)
    np.testing.assert_allclose(vol.spacing, np.linalg.norm(ref.affine[:3, :3], axis=0))


def test_singleton_4d_is_squeezed(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6, 1)
    path = tmp_path / "img.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    np.testing.assert_array_equal(read_volume(path).data, data[..., 0])


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_sitk_formats_match_nifti(tmp_path, suffix):
    """A file converted by SimpleITK itself (independent LPS handling) reads identically to the NIfTI."""
    rng = np.random.default_rng(1)
    data = rng.normal(size=(6, 7, 4)).astype(np.float32)
    nii = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(data, oblique_affine()), nii)
    other = tmp_path / f"img{suffix}"
    SimpleITK.WriteImage(SimpleITK.ReadImage(str(nii)), str(other))
    a, b = read_volume(nii), read_volume(other)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    assert b.format == "sitk"


def test_write_volume_round_trip_nrrd_and_nifti(tmp_path):
    rng = np.random.default_rng(2)
    data = rng.integers(0, 100, size=(5, 6, 7)).astype(np.int16)
    aff = lps_affine()
    for name in ("out.nii.gz", "out.nrrd"):
        write_volume(data, aff, tmp_path / name)
        vol = read_volume(tmp_path / name)
        np.testing.assert_array_equal(vol.to_source(vol.data), data)
        np.testing.assert_allclose(vol.source_affine, aff, atol=1e-5)
    assert not list(tmp_path.glob(".*tmp*")), "atomic writes left temp files"


def _write_dicom_series(folder, data_zyx: np.ndarray, spacing, origin) -> None:
    """Write a 3-D int16 array as a DICOM series (one file per slice) with SimpleITK."""
    folder.mkdir()
    img = SimpleITK.GetImageFromArray(data_zyx.astype(np.int16))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    writer = SimpleITK.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.1234567"
    direction = img.GetDirection()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        tags = {
            "0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.1.1", "0020|000e": series_uid,
            "0020|0037": "\\".join(map(str, (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7]))),
            "0020|0032": "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, k)))),
            "0020|0013": str(k + 1), "0008|0018": f"{series_uid}.{k + 1}", "0018|0050": str(spacing[2]),
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_folder(tmp_path):
    rng = np.random.default_rng(3)
    data_zyx = rng.integers(0, 1000, size=(5, 6, 7)).astype(np.int16)  # z, y, x
    spacing, origin = (0.8, 0.9, 2.0), (-10.0, 20.0, 30.0)
    _write_dicom_series(tmp_path / "dcm", data_zyx, spacing, origin)
    vol = read_volume(tmp_path / "dcm", case="d1")
    assert vol.format == "dicom"
    assert vol.source_shape == (7, 6, 5)
    np.testing.assert_array_equal(vol.to_source(vol.data), np.transpose(data_zyx, (2, 1, 0)))
    # LPS identity direction -> RAS affine diag(-sx, -sy, sz), origin (-ox, -oy, oz)
    expected = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    expected[:3, 3] = [10.0, -20.0, 30.0]
    np.testing.assert_allclose(vol.source_affine, expected, atol=1e-4)
    fp = input_fingerprint(tmp_path / "dcm")
    assert fingerprint_unchanged(tmp_path / "dcm", fp)


def test_dicom_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolumeError, match="no DICOM series"):
        read_volume(tmp_path / "empty", case="d2")


def _save(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), path)
    return path


@pytest.mark.parametrize("make, pattern", [
    (lambda: np.zeros((4, 4, 4, 3), np.float32), "4-D"),
    (lambda: np.zeros((4, 4), np.float32), "3-D"),
    (lambda: np.where(np.arange(64).reshape(4, 4, 4) == 5, np.nan, 1.0).astype(np.float32), "1 NaN"),
    (lambda: np.where(np.arange(64).reshape(4, 4, 4) == 5, np.inf, 1.0).astype(np.float32), "1 Inf"),
    (lambda: np.full((4, 4, 4), 7.0, np.float32), "constant image"),
])
def test_bad_volumes_raise_naming_case_and_file(tmp_path, make, pattern):
    path = _save(tmp_path / "bad.nii.gz", make())
    with pytest.raises(VolumeError, match=pattern) as info:
        read_volume(path, case="P042")
    msg = str(info.value)
    assert "P042" in msg and str(path) in msg
    assert info.value.case == "P042" and info.value.path == path


def test_constant_mask_is_allowed(tmp_path):
    path = _save(tmp_path / "mask.nii.gz", np.zeros((4, 4, 4), np.uint8))
    assert read_volume(path, kind="mask").data.sum() == 0


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(VolumeError, match="file not found"):
        read_volume(tmp_path / "nope.nii.gz", case="P1")
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(gzip.compress(b"this is not a nifti header" * 3))
    with pytest.raises(VolumeError, match="cannot read NIfTI") as info:
        read_volume(bad, case="P1")
    assert str(bad) in str(info.value)
    junk = tmp_path / "junk.mha"
    junk.write_text("garbage", encoding="utf-8")
    with pytest.raises(VolumeError, match="SimpleITK"):
        read_volume(junk, case="P1")


def test_fingerprint_detects_content_change(tmp_path):
    path = _save(tmp_path / "a.nii", np.ones((3, 3, 3), np.float32))
    fp = input_fingerprint(path)
    assert fingerprint_unchanged(path, fp)
    _save(path, np.full((3, 3, 3), 2.0, np.float32))
    assert input_fingerprint(path)["sha256"] != fp["sha256"]


def test_mask_dtype_kept_for_unscaled_integer_labels(tmp_path):
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1, 2, 3] = 4
    path = _save(tmp_path / "labels.nii.gz", labels, lps_affine())
    m = read_volume(path, kind="mask")
    assert m.data.dtype == np.uint8 and m.data.sum() == 4
    assert read_volume(path.with_name("labels.nii.gz"), kind="image").data.dtype == np.float32
    scaled = nib.Nifti1Image(labels, np.eye(4))
    scaled.header.set_slope_inter(0.5, 0)
    nib.save(scaled, tmp_path / "scaled.nii.gz")
    s = read_volume(tmp_path / "scaled.nii.gz", kind="mask")
    assert s.data.dtype == np.float32 and s.data.max() == 2.0


# ----------------------------------------------------------------------------- finding volumes in a folder


def test_find_volumes_lists_every_readable_format(tmp_path):
    """NIfTI, NRRD (+ detached .nhdr), MetaImage (.mha, .mhd + .raw) and a DICOM sub-folder; nothing else."""
    from bmstudy.io import IMAGE_SUFFIXES, find_volumes, is_dicom_series, volume_case_id

    rng = np.random.default_rng(5)
    data = rng.normal(size=(6, 7, 4)).astype(np.float32)
    folder = tmp_path / "scans"
    folder.mkdir()
    nib.save(nib.Nifti1Image(data, lps_affine()), folder / "P1_t1c.nii.gz")
    nib.save(nib.Nifti1Image(data, lps_affine()), folder / "P2.nii")
    for name in ("P3.nrrd", "P4.mha", "P5.mhd", "P6.nhdr", "P7.NRRD"):
        write_volume(data, lps_affine(), folder / name)
    _write_dicom_series(folder / "P8", rng.integers(0, 1000, size=(4, 7, 6)).astype(np.int16), (0.9, 0.9, 1.5),
                        (0.0, 0.0, 0.0))
    (folder / "P9.MHA").write_bytes((folder / "P4.mha").read_bytes())  # SimpleITK reads .mha in lower case only
    with pytest.raises(VolumeError):
        read_volume(folder / "P9.MHA")
    (folder / "notes.txt").write_text("not a volume")
    (folder / ".hidden.nii.gz").write_bytes(b"")
    (folder / "empty").mkdir()
    (folder / "nested").mkdir()
    nib.save(nib.Nifti1Image(data, lps_affine()), folder / "nested" / "deep.nii.gz")  # not searched
    # detached headers: data files under their final names, listed only through their header
    assert (folder / "P5.zraw").is_file() and (folder / "P6.raw.gz").is_file()
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]

    found = find_volumes(folder)
    assert [cid for cid, _ in found] == ["P1_t1c", "P2", "P3", "P4", "P5", "P6", "P7", "P8"]
    paths = dict(found)
    assert paths["P1_t1c"] == folder / "P1_t1c.nii.gz" and paths["P8"] == folder / "P8" and paths["P7"].name == "P7.NRRD"
    for cid, path in found:  # every listed volume is readable, with the expected format
        vol = read_volume(path, case=cid)
        assert vol.format == ("dicom" if cid == "P8" else "nifti" if cid in ("P1_t1c", "P2") else "sitk")
        if cid != "P8":
            np.testing.assert_allclose(vol.to_source(vol.data), data, atol=1e-6)
    assert [cid for cid, _ in find_volumes(folder, dicom=False)] == ["P1_t1c", "P2", "P3", "P4", "P5", "P6", "P7"]
    assert is_dicom_series(folder / "P8") and not is_dicom_series(folder / "empty")
    assert not is_dicom_series(folder / "nested") and not is_dicom_series(folder / "P3.nrrd")
    assert volume_case_id("x/INT001_t1c.nii.gz") == "INT001_t1c" and volume_case_id("scan.v2.mha") == "scan.v2"
    assert set(IMAGE_SUFFIXES) == {".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"}


def test_find_volumes_errors(tmp_path):
    from bmstudy.io import find_volumes

    with pytest.raises(NotADirectoryError, match="not a folder"):
        find_volumes(tmp_path / "nowhere")
    assert find_volumes(tmp_path) == []
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a.nii.gz")
    write_volume(data, np.eye(4), tmp_path / "a.nrrd")
    with pytest.raises(ValueError, match="two volumes for case id 'a'.*a.nii.gz and a.nrrd"):
        find_volumes(tmp_path)

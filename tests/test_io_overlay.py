"""Overlay pictures: radiological orientation checked in the written PNG (read back with PIL)
for phantoms in several voxel orientations, true aspect ratio, atomic writes, 2D real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from nibabel.affines import apply_affine
from PIL import Image

from medseg.errors import GeometryError, InputError
from medseg.io.overlay import overlay_slices, save_overlay_montage
from medseg.labels import get_label

LESION = get_label("lesion").colour_rgb


def _rot_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])


def _affine(direction: np.ndarray, spacing, shape) -> np.ndarray:
    """Voxel -> RAS affine with the given direction cosines, centred on the world origin."""
    aff = np.eye(4)
    aff[:3, :3] = direction @ np.diag(spacing)
    aff[:3, 3] = -aff[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return aff


ORIENTATIONS = {
    "RAS": np.eye(3),
    "LPS": np.diag([-1.0, -1.0, 1.0]),
    "LAS": np.diag([-1.0, 1.0, 1.0]),
    "PIR-like": np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, -1.0, 0]]),  # axes permuted
    "oblique": _rot_z(20.0) @ np.diag([-1.0, -1.0, 1.0]),
}


def _phantom(direction, shape=(36, 32, 12), spacing=(0.9, 1.0, 3.0), where="left"):
    """Grey background (50), body ellipsoid (100) and a lesion on the patient's LEFT (RAS x < -4),
    or at the SUPERIOR or ANTERIOR end, decided in world coordinates (nibabel)."""
    aff = _affine(direction, spacing, shape)
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    xyz = apply_affine(aff, ijk)
    extent = np.abs(aff[:3, :3]) @ (np.asarray(shape) - 1) / 2.0  # half-size of the box in x, y, z
    extent = np.maximum(extent, 1.0)  # a one-slice volume has no extent along its normal
    body = ((xyz / (0.8 * extent)) ** 2).sum(-1) < 1
    img = np.where(body, 100.0, 50.0).astype(np.float32)
    sel = {"left": xyz[..., 0] < -0.15 * extent[0], "superior": xyz[..., 2] > 0.2 * extent[2],
           "anterior": xyz[..., 1] > 0.15 * extent[1]}[where]
    lab = (body & sel).astype(np.uint8)
    t_aff = torch.as_tensor(aff)
    return (MetaTensor(torch.from_numpy(img)[None], affine=t_aff),
            MetaTensor(torch.from_numpy(lab)[None], affine=t_aff.clone(), meta={"labels": {1: "lesion"}}))


def _is_lesion(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(int)
    return (rgb[..., 0] - rgb[..., 2] > 40) & (rgb[..., 0] - rgb[..., 1] > 40)


def _panel_box(png: np.ndarray) -> tuple[int, int, int, int]:
    """Rows/columns of the (single) picture panel: the longest run of rows holding many grey pixels."""
    rgb = png.astype(int)
    grey = (np.abs(rgb[..., 0] - rgb[..., 1]) < 6) & (np.abs(rgb[..., 1] - rgb[..., 2]) < 6) & \
        (rgb[..., 0] > 80)
    full = grey | _is_lesion(png)
    rows = full.sum(1) > 20
    best, start, r0, r1 = 0, None, 0, 0
    for r, flag in enumerate(np.r_[rows, False]):
        if flag and start is None:
            start = r
        elif not flag and start is not None:
            if r - start > best:
                best, r0, r1 = r - start, start, r
            start = None
    cols = np.flatnonzero(full[r0:r1].sum(0) > 0.5 * (r1 - r0))
    return r0, r1, int(cols.min()), int(cols.max()) + 1


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_left_lesion_is_on_the_right_of_the_axial_png(tmp_path, name):
    image, labels = _phantom(ORIENTATIONS[name])
    out = save_overlay_montage(image, labels, tmp_path / "axial.png", n_slices=1, views=("axial",),
                               window=(0.0, 110.0))
    png = np.asarray(Image.open(out).convert("RGB"))
    assert 100 < png.shape[0] < 3000 and 100 < png.shape[1] < 3000
    r0, r1, c0, c1 = _panel_box(png)
    assert r1 - r0 > 50 and c1 - c0 > 50
    panel = png[r0:r1, c0:c1]
    ys, xs = np.nonzero(_is_lesion(panel))
    assert xs.size > 100
    # patient's left = image right (all of it; an oblique cut leaves a few pixels near the middle)
    right = np.mean(xs > panel.shape[1] / 2)
    assert right > (0.9 if name == "oblique" else 0.999), (name, right)


def _share(mask: np.ndarray, axis: int) -> float:
    """Fraction of the True pixels in the first half (top rows for axis 0, left columns for 1)."""
    pos = np.nonzero(mask)[axis]
    assert pos.size > 20
    return float(np.mean(pos < mask.shape[axis] / 2))


@pytest.mark.parametrize("name", ["LPS", "PIR-like", "oblique"])
def test_coronal_and_sagittal_conventions(name):
    need = 0.9 if name == "oblique" else 0.999
    image, labels = _phantom(ORIENTATIONS[name], where="superior")
    for panel in overlay_slices(image, labels, n_slices=2, views=("coronal", "sagittal")):
        assert _share(_is_lesion(panel.rgb), 0) > need  # superior at the top
        assert panel.letters[2:] == ("S", "I")
    image, labels = _phantom(ORIENTATIONS[name], where="anterior")
    for panel in overlay_slices(image, labels, n_slices=2, views=("sagittal",)):
        assert _share(_is_lesion(panel.rgb), 1) > need  # anterior on the left
        assert panel.letters[:2] == ("A", "P")
    for panel in overlay_slices(image, labels, n_slices=1, views=("axial",)):
        assert _share(_is_lesion(panel.rgb), 0) > need  # anterior at the top
        assert panel.letters == ("R", "L", "A", "P")


def test_aspect_ratio_follows_spacing():
    shape, spacing = (40, 30, 10), (0.5, 0.8, 4.0)
    image, labels = _phantom(np.eye(3), shape=shape, spacing=spacing)
    extent = np.asarray(shape) * np.asarray(spacing)  # mm along x, y, z
    expected = {"axial": extent[1] / extent[0], "coronal": extent[2] / extent[0],
                "sagittal": extent[2] / extent[1]}
    for panel in overlay_slices(image, labels, n_slices=1):
        h, w = panel.rgb.shape[:2]
        assert h / w == pytest.approx(expected[panel.view], rel=0.05), panel.view


def test_slices_go_through_the_labelled_region():
    image, labels = _phantom(np.eye(3), where="left")
    lab = labels[0].numpy()
    labelled_z = np.flatnonzero(lab.any(axis=(0, 1)))
    panels = overlay_slices(image, labels, n_slices=4, views=("axial",))
    assert len(labelled_z) > 4 and len(panels) == 4
    assert all(p.index in labelled_z and p.labels_present == [1] for p in panels)
    assert len({p.index for p in panels}) == 4


def test_png_is_written_atomically(tmp_path, monkeypatch):
    image, labels = _phantom(np.eye(3))
    out = tmp_path / "montage.png"
    save_overlay_montage(image, labels, out, n_slices=2, title="phantom")
    first = out.read_bytes()
    assert first.startswith(b"\x89PNG") and [p.name for p in tmp_path.iterdir()] == ["montage.png"]

    from matplotlib.figure import Figure

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as fh:
            fh.write(b"\x89PNG half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        save_overlay_montage(image, labels, out, n_slices=2)
    assert out.read_bytes() == first  # the old picture is untouched, no temporary is left
    assert [p.name for p in tmp_path.iterdir()] == ["montage.png"]


def test_mismatched_grids_are_refused(tmp_path):
    image, labels = _phantom(np.eye(3))
    other = MetaTensor(labels.as_tensor()[:, :, :, :5].clone(), affine=labels.affine.clone())
    with pytest.raises(GeometryError, match="shape"):
        save_overlay_montage(image, other, tmp_path / "x.png")
    moved = labels.affine.clone()
    moved[0, 3] += 5.0
    shifted = MetaTensor(labels.as_tensor().clone(), affine=moved)
    with pytest.raises(GeometryError, match="affine"):
        overlay_slices(image, shifted)
    one_hot = MetaTensor(torch.cat([1 - labels.as_tensor(), labels.as_tensor()]), affine=labels.affine.clone())
    with pytest.raises(InputError, match="channels"):
        overlay_slices(image, one_hot)
    assert not (tmp_path / "x.png").exists()


def test_real_2d_nuclei_single_panel(tmp_path):
    import tifffile

    from medseg.data import sample

    img = tifffile.imread(sample("nuclei_image")).astype(np.float32)
    mask = tifffile.imread(sample("nuclei_mask"))
    assert img.shape == mask.shape and img.ndim == 2
    # medseg axis convention: (i, j) = (column, row) of the stored picture
    image = MetaTensor(torch.from_numpy(img.T.copy())[None], affine=torch.eye(4, dtype=torch.float64))
    labels = MetaTensor(torch.from_numpy((mask.T > 0).astype(np.uint8))[None],
                        affine=torch.eye(4, dtype=torch.float64))
    panels = overlay_slices(image, labels, label_names={1: "nucleus"})
    assert len(panels) == 1 and panels[0].view == "2d"
    rgb = panels[0].rgb
    assert rgb.shape == (512, 512, 3)  # as stored, one display pixel per image pixel
    colour = np.asarray(get_label("nucleus").colour_rgb)
    # nucleus pixels are tinted toward the registry colour; background stays grey
    tinted = np.abs(rgb.astype(int) - rgb.mean(-1, keepdims=True)).sum(-1) > 20
    fg = mask > 0
    assert tinted[fg].mean() > 0.95 and tinted[~fg].mean() < 0.01
    edges = np.all(rgb == colour, axis=-1)
    assert edges.any() and np.all(fg[edges])  # outline pixels lie on nuclei
    out = save_overlay_montage(image, labels, tmp_path / "nuclei.png", label_names={1: "nucleus"})
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] >= 400 and im.size[1] >= 400


def _sitk_metatensor(path) -> tuple[MetaTensor, object]:
    """An independent reader: SimpleITK's LPS geometry turned into the medseg RAS contract."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(path))
    arr = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0))  # (z, y, x) -> (i, j, k)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr))[None], affine=torch.as_tensor(ras)), img


@pytest.mark.parametrize("case", ["lung1", "lung2"])
def test_real_ct_nodule_side_matches_simpleitk(case):
    """pyradiomics chest CTs: the nodule's side of the patient, from SimpleITK physical points
    (LPS: x > 0 is the patient's left), decides which half of the axial picture shows it."""
    from medseg.data import sample

    image, _ = _sitk_metatensor(sample(f"{case}_image"))
    labels, label_img = _sitk_metatensor(sample(f"{case}_label"))
    arr = labels[0].numpy()
    centroid = np.argwhere(arr > 0).mean(0)
    centre = (np.asarray(arr.shape) - 1) / 2.0
    x_nodule = label_img.TransformContinuousIndexToPhysicalPoint(centroid.tolist())[0]
    x_centre = label_img.TransformContinuousIndexToPhysicalPoint(centre.tolist())[0]
    patient_left = x_nodule > x_centre + 5.0
    assert patient_left or x_nodule < x_centre - 5.0  # the nodule is clearly off-centre
    (panel,) = overlay_slices(image, labels, n_slices=1, views=("axial",), window=(-1000, 400),
                              label_names={1: "lung_nodule"})
    _, xs = np.nonzero(_is_lesion(panel.rgb))
    assert xs.size > 20
    on_right_half = float(np.mean(xs > panel.rgb.shape[1] / 2))
    assert on_right_half == (1.0 if patient_left else 0.0), (case, on_right_half)


@pytest.mark.parametrize(("case", "expected"), [("cr_chest", ("R", "L", "H", "F")),
                                                ("cr_rg3", ("L", "R", "H", "F"))])
def test_real_radiograph_letters_follow_patient_orientation(case, expected):
    """Real CR images (pydicom-data): letters from PatientOrientation as pydicom reads it, the
    image shown as stored (rows top to bottom)."""
    import pydicom

    from medseg.data import sample
    from medseg.io import load

    path = sample(case)
    raw = pydicom.dcmread(path)
    assert [str(v) for v in raw.PatientOrientation] == [expected[1], expected[3]]
    image = load(path)
    (panel,) = overlay_slices(image, None)
    assert panel.view == "2d" and panel.letters == expected
    # shown as stored: the grey panel is the pixel array, resampled to at most 512 pixels
    pixels = raw.pixel_array.astype(float)
    h, w = panel.rgb.shape[:2]
    assert max(h, w) == 512 and h / w == pytest.approx(pixels.shape[0] / pixels.shape[1], rel=0.01)
    small = pixels[(np.arange(h) * pixels.shape[0]) // h][:, (np.arange(w) * pixels.shape[1]) // w]
    if raw.PhotometricInterpretation == "MONOCHROME1":  # stored inverted: high value = dark
        small = -small
    grey = panel.rgb[..., 0].astype(float)
    assert np.corrcoef(grey.ravel(), small.ravel())[0, 1] > 0.95


def test_single_slice_volume_shows_only_its_plane():
    image, labels = _phantom(np.eye(3), shape=(36, 32, 1), spacing=(0.9, 1.0, 3.0))
    panels = overlay_slices(image, labels, n_slices=3)
    assert [p.view for p in panels] == ["axial"] and panels[0].index == 0
    assert panels[0].labels_present == [1]


def test_thin_series_strips_are_drawn_larger(tmp_path):
    """A 20-slice, 2.5 mm series with 0.7 mm pixels: coronal and sagittal panels are strips (about
    3.6 times wider than tall); their rows get half the columns, so each strip is drawn at least
    twice as tall as it would be in the axial row's column count, and the PNG grows accordingly."""
    from medseg.io.overlay import STRIP_ASPECT, montage_layout

    shape, spacing = (256, 256, 20), (0.7, 0.7, 2.5)
    aff = _affine(np.diag([-1.0, -1.0, 1.0]), spacing, shape)
    img = np.random.default_rng(0).normal(40, 10, shape).astype(np.float32)
    lab = np.zeros(shape, np.uint8)
    lab[60:200, 80:180, 3:17] = 1
    image = MetaTensor(torch.from_numpy(img)[None], affine=torch.as_tensor(aff))
    labels = MetaTensor(torch.from_numpy(lab)[None], affine=torch.as_tensor(aff))
    panels = overlay_slices(image, labels, n_slices=6)
    rows, row_px, width = montage_layout(panels)
    by_view = {view: (ps, n, h) for (view, ps, n), h in zip(rows, row_px, strict=True)}
    axial_cols = by_view["axial"][1]
    for view in ("coronal", "sagittal"):
        ps, n, h = by_view[view]
        aspect = ps[0].rgb.shape[1] / ps[0].rgb.shape[0]
        assert aspect >= STRIP_ASPECT
        assert n == -(-axial_cols // 2) and len(ps) <= n
        assert h >= 1.9 * width / axial_cols / aspect  # twice the height it had in six columns
        assert h >= 60  # display pixels: readable
    out = save_overlay_montage(image, labels, tmp_path / "thin.png")
    assert Image.open(out).size[1] >= sum(row_px) * 0.9

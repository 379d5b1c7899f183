"""nnU-Net v2 model folders through `--model`: medseg's labels against `nnUNetv2_predict`'s own.

The reference is nnU-Net itself: `tests/data/nnunet_tiny/` holds a tiny nnU-Net v2 model built and
trained by nnunetv2 (3d_fullres folds 0 and 1, 2d fold 0; see tests/nnunet_fixture.py, which
rebuilds it) and what `nnUNetv2_predict -device cpu` wrote for three inputs: an LPS phantom, an
oblique flipped one, and a thick-slice one (1.5 x 1.5 x 7.5 mm, so nnU-Net resamples it with a
separate z axis). The slow test rebuilds the whole fixture with the installed nnunetv2 (cached
under ~/.cache/medseg/test-fixtures/<version>) and compares again.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import nnunet_fixture as fx  # noqa: E402

from medseg import cli  # noqa: E402
from medseg.errors import ConfigError, ModelError  # noqa: E402

FIXTURE = pathlib.Path(__file__).parent / "data" / "nnunet_tiny"
MIN_AGREEMENT = 0.999


def _model(root: pathlib.Path, cfg: str) -> pathlib.Path:
    return root / "models" / f"nnUNetTrainer__nnUNetPlans__{cfg}"


@pytest.fixture(scope="module")
def nnunet():
    return pytest.importorskip("nnunetv2")


def _compare(root: pathlib.Path, cfg: str, folds: tuple, pred: str, case: str) -> tuple[float, np.ndarray]:
    """Fraction of voxels where medseg's labels equal nnUNetv2_predict's (same grid asserted)."""
    import medseg.io
    from medseg.inference.sources.nnunet import NnunetOptions, NnunetV2Source

    image = medseg.io.load(root / "inputs" / f"{case}_0000.nii.gz")
    src = NnunetV2Source(_model(root, cfg), NnunetOptions(folds=folds))
    ours = src.predict(image, device="cpu", progress=False)
    ref = medseg.io.load(root / "predictions" / pred / f"{case}.nii.gz", kind="label")
    assert tuple(ours.shape) == tuple(ref.shape) == tuple(image.shape)
    np.testing.assert_allclose(np.asarray(ours.affine), np.asarray(image.affine), atol=0)
    np.testing.assert_allclose(np.asarray(ref.affine), np.asarray(image.affine), atol=1e-4)
    a, b = ours.numpy()[0].astype(np.int64), ref.numpy()[0].astype(np.int64)
    return float((a == b).mean()), b


def _check_fixture(root: pathlib.Path) -> dict[str, float]:
    figures = {}
    for cfg, folds, pred in fx.PREDICTIONS:
        for case in fx.INPUTS:
            agree, ref = _compare(root, cfg, folds, pred, case)
            figures[f"{pred}/{case}"] = agree
            # nnU-Net's own result is far from constant: no single label could reach the threshold
            values, counts = np.unique(ref, return_counts=True)
            assert len(values) >= 2 and 1 - counts.max() / ref.size >= 0.01, (pred, case, values, counts)
            assert agree >= MIN_AGREEMENT, (pred, case, agree)
    return figures


def test_matches_nnunetv2_predict(nnunet):
    figures = _check_fixture(FIXTURE)
    print("agreement with nnUNetv2_predict:", json.dumps(figures))
    assert len(figures) == len(fx.PREDICTIONS) * len(fx.INPUTS)


def test_describe_and_default_folds(nnunet):
    from medseg.inference.sources.nnunet import NnunetV2Source

    src = NnunetV2Source(_model(FIXTURE, "3d_fullres"))
    info = src.describe()
    assert info.kind == "nnunet_v2" and info.channels == 1 and info.modality == ("CT",)
    assert info.labels == {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left"}
    assert info.details["folds"] == [0, 1] and info.details["configuration"] == "3d_fullres"
    assert info.details["tta_mirroring"] is True and info.details["step_size"] == 0.5
    assert info.spatial_dims == 3 and len(info.spacing_mm) == 3
    assert "timm" not in sys.modules  # the U-Net path of dynamic_network_architectures never needs it


def test_install_keeps_cpu_torch(nnunet):
    # requirements-nnunet.txt goes in with --no-deps: timm/torchvision would replace torch 2.13.0
    assert torch.__version__.split("+")[0] == "2.13.0"


def test_segment_cli_nifti_and_provenance(nnunet, tmp_path, capsys):
    import nibabel as nib

    src = FIXTURE / "inputs" / "oblique_ras_0000.nii.gz"
    out = tmp_path / "out"
    assert cli.main(["segment", str(src), "--model", str(_model(FIXTURE, "3d_fullres")), "--folds", "0",
                     "--output", str(out), "--format", "nifti,png"]) == 0
    case = out / "oblique_ras_0000"
    assert capsys.readouterr().out.strip() == str(case)
    seg = nib.load(case / "seg.nii.gz")
    ref = nib.load(FIXTURE / "predictions" / "3d_fullres_f0" / "oblique_ras.nii.gz")
    np.testing.assert_allclose(seg.affine, nib.load(src).affine, atol=1e-5)
    agree = (np.asarray(seg.dataobj) == np.asarray(ref.dataobj)).mean()
    assert agree >= MIN_AGREEMENT
    prov = json.loads((case / "provenance.json").read_text())
    assert prov["model"]["source"] == "nnunet_v2"
    assert prov["model"]["describe"]["details"]["folds"] == [0]
    assert prov["tta"] is True and (case / "overlay.png").is_file()


def test_segment_cli_dicom_writes_seg(nnunet, tmp_path):
    import highdicom as hd

    import medseg.io
    from medseg.data.phantoms import abdomen_ct, save_phantom
    from medseg.inference.sources.nnunet import NnunetOptions, NnunetV2Source

    ph = abdomen_ct(shape=(40, 40, 24), spacing=(1.5, 1.5, 2.5), orientation="LPS", seed=504)
    save_phantom(ph, tmp_path / "dcm", "dicom")
    series = tmp_path / "dcm" / "image"
    out = tmp_path / "out"
    assert cli.main(["segment", str(series), "--bundle", str(_model(FIXTURE, "3d_fullres")), "--folds", "0",
                     "--output", str(out)]) == 0
    (case,) = list(out.iterdir())
    assert sorted(p.name for p in case.iterdir()) == ["overlay.png", "provenance.json", "seg.dcm", "seg.nii.gz"]
    labels = medseg.io.load(case / "seg.nii.gz", kind="label").numpy()[0]
    direct = NnunetV2Source(_model(FIXTURE, "3d_fullres"), NnunetOptions(folds=(0,))).predict(
        medseg.io.load(series), device="cpu", progress=False).numpy()[0]
    np.testing.assert_array_equal(labels, direct)
    seg = hd.seg.segread(case / "seg.dcm")
    names = {seg.get_segment_description(i).SegmentLabel.lower() for i in seg.segment_numbers}
    # dataset.json's names, coded through medseg.labels (SNOMED CT) like medseg's own models
    assert names and names <= {"liver", "spleen", "right kidney", "left kidney"}


def test_batch_with_nnunet_model(nnunet, tmp_path, capsys):
    """`medseg batch FOLDER --model NNUNET_DIR`: each case equals nnUNetv2_predict's; a rerun skips them."""
    import nibabel as nib

    src = tmp_path / "in"
    src.mkdir()
    for case in ("lps", "aniso"):
        shutil.copy2(FIXTURE / "inputs" / f"{case}_0000.nii.gz", src / f"{case}.nii.gz")
    out = tmp_path / "out"
    args = ["batch", str(src), "--model", str(_model(FIXTURE, "3d_fullres")), "--folds", "0", "--output", str(out),
            "--format", "nifti"]
    assert cli.main(args) == 0
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted((r["case"], r["status"]) for r in rows) == [("aniso", "done"), ("lps", "done")]
    for case in ("lps", "aniso"):
        ours = np.asarray(nib.load(out / case / "seg.nii.gz").dataobj)
        ref = np.asarray(nib.load(FIXTURE / "predictions" / "3d_fullres_f0" / f"{case}.nii.gz").dataobj)
        assert (ours == ref).mean() >= MIN_AGREEMENT
    capsys.readouterr()
    assert cli.main(args) == 0
    journal = [json.loads(x) for x in (out / "manifest.rank0.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "done" for r in journal) == 2  # not redone


def test_options_change_the_result(nnunet):
    """--disable-tta, --step-size and --folds reach nnU-Net (the result moves, the grid does not)."""
    import medseg.io
    from medseg.inference.sources.nnunet import NnunetOptions, NnunetV2Source

    image = medseg.io.load(FIXTURE / "inputs" / "aniso_0000.nii.gz")
    folder = _model(FIXTURE, "3d_fullres")
    base = NnunetV2Source(folder, NnunetOptions(folds=(0,))).predict(image, progress=False).numpy()
    no_tta = NnunetV2Source(folder, NnunetOptions(folds=(0,), tta=False)).predict(image, progress=False).numpy()
    fold1 = NnunetV2Source(folder, NnunetOptions(folds=(1,))).predict(image, progress=False).numpy()
    assert base.shape == no_tta.shape == fold1.shape == tuple(image.shape)
    assert (base != no_tta).any() and (base != fold1).any()


def test_checkpoint_payload_refused_and_never_runs(nnunet, tmp_path, capsys):
    """A checkpoint whose pickle would create a file when unpickled: one line, nothing runs."""
    folder = tmp_path / "model"
    shutil.copytree(_model(FIXTURE, "3d_fullres"), folder)
    canary = tmp_path / "canary"
    ck = folder / "fold_0" / "checkpoint_final.pth"
    from medseg.inference.sources.nnunet import load_checkpoint

    data = load_checkpoint(ck)
    data["logging"] = {"payload": _Payload(canary)}
    torch.save(data, ck)
    with pytest.raises(ModelError) as err:
        from medseg.inference.sources.nnunet import NnunetOptions, NnunetV2Source

        NnunetV2Source(folder, NnunetOptions(folds=(0,)))
    msg = str(err.value)
    assert "\n" not in msg and "refused" in msg and "fold_0/checkpoint_final.pth" in msg
    assert not canary.exists()
    # and through the command line: exit 2, one line on stderr, no output folder
    src = FIXTURE / "inputs" / "lps_0000.nii.gz"
    assert cli.main(["segment", str(src), "--model", str(folder), "--output", str(tmp_path / "out")]) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith("medseg: error:") and err_text.count("\n") == 1
    assert not canary.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def _copy_with(tmp_path, edit_plans=None, edit_dataset=None) -> pathlib.Path:
    folder = tmp_path / "model"
    shutil.copytree(_model(FIXTURE, "3d_fullres"), folder)
    for name, edit in (("plans.json", edit_plans), ("dataset.json", edit_dataset)):
        if edit:
            d = json.loads((folder / name).read_text())
            edit(d)
            (folder / name).write_text(json.dumps(d))
    return folder


def test_region_cascade_reader_and_hostile_plans_refused(nnunet, tmp_path):
    from medseg.inference.sources.nnunet import NnunetV2Source

    def regions(d):
        d["labels"] = {"background": 0, "organs": [1, 2, 3, 4], "liver": 1}
        d["regions_class_order"] = [1, 2]

    def cascade(d):
        d["configurations"]["3d_fullres"]["previous_stage"] = "3d_lowres"

    def reader(d):
        d["image_reader_writer"] = "NibabelIOWithReorient"

    def hostile(d):
        d["configurations"]["3d_fullres"]["architecture"]["network_class_name"] = "os.system"

    def hostile_kw(d):
        d["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["nonlin"] = "subprocess.Popen"

    cases = [(None, regions, "region-based"), (cascade, None, "cascade"), (reader, None, "NibabelIOWithReorient"),
             (hostile, None, "refused"), (hostile_kw, None, "refused")]
    for i, (plans_edit, ds_edit, words) in enumerate(cases):
        folder = _copy_with(tmp_path / str(i), plans_edit, ds_edit)
        with pytest.raises(ModelError) as err:
            NnunetV2Source(folder)
        assert words in str(err.value) and "\n" not in str(err.value)


def test_nnunet_options_need_an_nnunet_model(tmp_path):
    from medseg.inference.pipeline import resolve_model
    from medseg.inference.sources.nnunet import NnunetOptions

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(ConfigError, match="nnU-Net v2 model folders only"):
        resolve_model(str(run), nnunet=NnunetOptions(folds=(0,)), model_loader=lambda *a, **k: _fake())
    with pytest.raises(ConfigError, match="--step-size"):
        NnunetOptions(step_size=1.5)
    with pytest.raises(ConfigError, match="--folds"):
        NnunetOptions(folds=("x",))


def _fake():
    from medseg.inference.model import SegmentationModel
    from medseg.models import build_network

    spec = {"arch": "conv", "spatial_dims": 3, "in_channels": 1, "out_channels": 2}
    return SegmentationModel(build_network(spec), spec, "ct_abdomen", {1: "x"}, (8, 8, 8))


def test_two_models_one_label_map(nnunet, tmp_path):
    """--model 3d --model 2d: classes 1-4 from the first, 5-8 from the second; the first wins a voxel."""
    import medseg.io
    from medseg.inference.pipeline import resolve_model
    from medseg.inference.sources.nnunet import NnunetOptions, NnunetV2Source

    image = medseg.io.load(FIXTURE / "inputs" / "lps_0000.nii.gz")
    a = NnunetV2Source(_model(FIXTURE, "3d_fullres"), NnunetOptions(folds=(0,))).predict(image, progress=False)
    b = NnunetV2Source(_model(FIXTURE, "2d"), NnunetOptions(folds=(0,))).predict(image, progress=False)
    model, kind = resolve_model([str(_model(FIXTURE, "3d_fullres")), str(_model(FIXTURE, "2d"))],
                                nnunet=NnunetOptions(folds=(0,)))
    assert kind == "combined"
    assert model.labels[1] == "liver" and model.labels[5] == "liver (nnUNetTrainer__nnUNetPlans__2d)"
    both = model.predict(image, progress=False).numpy()[0].astype(int)
    a, b = a.numpy()[0].astype(int), b.numpy()[0].astype(int)
    expect = np.where(a > 0, a, np.where(b > 0, b + 4, 0))
    np.testing.assert_array_equal(both, expect)
    assert ((a > 0) & (b > 0)).any() and ((a == 0) & (b > 0)).any()  # both halves of the rule are used


@pytest.mark.slow
def test_rebuilt_fixture_matches_nnunetv2_predict(nnunet):
    """Rebuild the fixture with the installed nnunetv2 (plan, preprocess, train, predict) and compare."""
    from importlib.metadata import version

    cache = pathlib.Path(os.environ.get("MEDSEG_CACHE", pathlib.Path.home() / ".cache" / "medseg"))
    root = cache / "test-fixtures" / f"{fx.VERSION}-nnunetv2-{version('nnunetv2')}"
    if not (root / "VERSION").is_file():
        fx.build(root, root.parent / (root.name + ".work"))
    figures = _check_fixture(root)
    print("agreement with nnUNetv2_predict (rebuilt):", json.dumps(figures))


@pytest.mark.slow
def test_dicom_series_matches_nnunetv2_predict_on_its_simpleitk_conversion(nnunet, tmp_path):
    """An oblique DICOM series: `medseg segment SERIES --model` equals `nnUNetv2_predict` run on the
    NIfTI that SimpleITK's series reader makes of it (what an nnU-Net user would feed it)."""
    import subprocess

    import nibabel as nib
    import SimpleITK as sitk

    from medseg.data.phantoms import abdomen_ct, save_phantom

    th = np.deg2rad(15.0)
    oblique = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(th), -np.sin(th)], [0.0, np.sin(th), np.cos(th)]])
    ph = abdomen_ct(shape=(40, 40, 24), spacing=(1.5, 1.5, 2.5), orientation=oblique, seed=505)
    save_phantom(ph, tmp_path / "dcm", "dicom")
    series = tmp_path / "dcm" / "image"
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    (tmp_path / "in").mkdir()
    sitk.WriteImage(sitk.Cast(reader.Execute(), sitk.sitkFloat32), str(tmp_path / "in" / "case_0000.nii.gz"))
    results = tmp_path / "results" / fx.DATASET
    results.mkdir(parents=True)
    (results / "nnUNetTrainer__nnUNetPlans__3d_fullres").symlink_to(_model(FIXTURE, "3d_fullres"))
    env = dict(os.environ, nnUNet_results=str(tmp_path / "results"), nnUNet_raw=str(tmp_path),
               nnUNet_preprocessed=str(tmp_path))
    subprocess.run([fx._tool("nnUNetv2_predict"), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "ref"), "-d",
                    str(fx.DATASET_ID), "-c", "3d_fullres", "-f", "0", "-device", "cpu", "--disable_progress_bar",
                    "-npp", "1", "-nps", "1"], env=env, check=True, capture_output=True)
    out = tmp_path / "out"
    assert cli.main(["segment", str(series), "--model", str(_model(FIXTURE, "3d_fullres")), "--folds", "0",
                     "--output", str(out), "--format", "nifti"]) == 0
    (case,) = list(out.iterdir())
    ours, ref = nib.load(case / "seg.nii.gz"), nib.load(tmp_path / "ref" / "case.nii.gz")
    np.testing.assert_allclose(ours.affine, ref.affine, atol=1e-3)
    a, b = np.asarray(ours.dataobj), np.asarray(ref.dataobj)
    values, counts = np.unique(b, return_counts=True)
    assert len(values) >= 2 and 1 - counts.max() / b.size >= 0.01
    agree = float((a == b).mean())
    print("DICOM series vs nnUNetv2_predict on its SimpleITK NIfTI:", agree)
    assert agree >= MIN_AGREEMENT


def test_missing_nnunetv2_is_one_line(tmp_path, monkeypatch, capsys):
    """Without the nnunet extra an nnU-Net folder is recognised and refused with the install line."""
    from medseg.inference.sources import nnunet as nn_source

    monkeypatch.setattr(nn_source, "nnunet_available", lambda: False)
    src = FIXTURE / "inputs" / "lps_0000.nii.gz"
    assert cli.main(["segment", str(src), "--model", str(_model(FIXTURE, "3d_fullres")),
                     "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medseg: error:") and err.count("\n") == 1 and "requirements-nnunet.txt" in err

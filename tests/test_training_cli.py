"""`medseg train` command: thin wrapper; a bad dataset is one line on stderr and exit code 2."""

from __future__ import annotations

import json

import pytest

from medseg.cli import main


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_missing_dataset_exit_2(tmp_path, capsys):
    rc = main(["train", str(tmp_path / "nope"), "--preset", "ct_abdomen", "--output", str(tmp_path / "r")])
    assert rc == 2
    assert _err_line(capsys) == "medseg: error: dataset 'nope' does not exist"
    assert not (tmp_path / "r").exists()


def test_grid_mismatch_exit_2(tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    for sub in ("images", "labels"):
        (tmp_path / "ds" / sub).mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(tmp_path / "ds/images/p1.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((8, 8, 6), np.uint8), np.eye(4)), str(tmp_path / "ds/labels/p1.nii.gz"))
    rc = main(["train", str(tmp_path / "ds"), "--preset", "ct_abdomen", "--output", str(tmp_path / "r")])
    assert rc == 2
    line = _err_line(capsys)
    assert line.startswith("medseg: error: case 'p1': label shape (8, 8, 6) differs")


def test_bad_network_json_exit_2(tmp_path, capsys):
    from test_training_loop import make_sphere_msd

    ds = make_sphere_msd(tmp_path / "ds", n=2, shape=(12, 12, 8))
    rc = main(["train", str(ds), "--preset", "ct_abdomen", "--network", "{arch: unet", "--output",
               str(tmp_path / "r")])
    assert rc == 2
    assert "network spec is not valid JSON" in _err_line(capsys)


def test_bad_preset_overrides_exit_2(tmp_path, capsys):
    rc = main(["train", str(tmp_path), "--preset", "ct_abdomen", "--output", str(tmp_path / "r"),
               "--preset-overrides", "[1, 2]"])
    assert rc == 2
    assert _err_line(capsys) == "medseg: error: --preset-overrides must be a JSON object"


def test_init_weights_that_are_not_torch_weights_exit_2(tmp_path, capsys):
    """A hostile or damaged --init-weights file: one line, exit 2, nothing unpickled, no run folder."""
    from test_training_loop import make_sphere_msd

    ds = make_sphere_msd(tmp_path / "ds", n=2, shape=(12, 12, 8))
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR.")  # a pickle that would run a command
    rc = main(["train", str(ds), "--preset", "ct_abdomen", "--network", '{"arch": "unet", "channels": [4, 8]}',
               "--epochs", "1", "--patch", "8,8,8", "--output", str(tmp_path / "r"), "--init-weights", str(bad)])
    assert rc == 2
    assert _err_line(capsys).startswith(
        "medseg: error: init_weights: weights.pt is not a plain state dict and was not loaded")
    assert not (tmp_path / "r").exists()


def test_bad_patch_is_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["train", str(tmp_path), "--preset", "ct_abdomen", "--output", str(tmp_path / "r"),
              "--patch", "96,x"])
    assert exc.value.code == 2


def test_cli_trains_and_prints_run_folder(tmp_path, capsys):
    from test_training_loop import make_sphere_msd

    ds = make_sphere_msd(tmp_path / "ds", n=2, shape=(16, 16, 12))
    out = tmp_path / "run"
    rc = main(["train", str(ds), "--preset", "ct_abdomen", "--network",
               json.dumps({"arch": "unet", "channels": [4, 8], "num_res_units": 0}), "--output", str(out),
               "--epochs", "1", "--patch", "16,16,8", "--num-workers", "0", "--device", "cpu",
               "--preset-overrides", '{"target_spacing": [3.0, 3.0, 4.0]}', "--balance-lesions"])
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert json.loads((out / "train_config.json").read_text())["augmentation"]["balance_components"] is True
    spec = json.loads((out / "model_spec.json").read_text())
    assert spec["inference"]["roi_size"] == [16, 16, 8]
    assert spec["inference"]["preset_overrides"] == {"target_spacing": [3.0, 3.0, 4.0]}
    assert (out / "checkpoints" / "best.pt").is_file() and (out / "log.csv").is_file()

    # the override reaches the training pipeline: voxels of 3 x 3 x 4 mm (affine column norms)
    import numpy as np

    from medseg.inference import SegmentationModel
    from medseg.training.pipeline import base_transforms

    assert SegmentationModel.from_run_dir(out).preset_overrides == {"target_spacing": [3.0, 3.0, 4.0]}
    item = base_transforms("ct_abdomen", {1: "liver"}, preset_overrides={"target_spacing": (3.0, 3.0, 4.0)})(
        {"image": [str(ds / "imagesTr/case_000.nii.gz")], "label": str(ds / "labelsTr/case_000.nii.gz")})
    for key in ("image", "label"):
        spacing = np.linalg.norm(np.asarray(item[key].affine)[:3, :3], axis=0)
        np.testing.assert_allclose(spacing, [3.0, 3.0, 4.0], atol=1e-5)

"""medseg.bundle: build a tiny bundle from a run folder written per the contract, then check it
against independent references (MONAI's DEFAULT_METADATA keys, hashlib, nibabel geometry,
torch.jit / onnxruntime outputs) and verify it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

SPEC = {"arch": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8],
        "strides": [2], "num_res_units": 1}
LABELS = {"1": "liver", "2": "spleen"}
ROI = [16, 16, 16]


def make_run(run: Path, *, spec: dict | None = None, preset: str = "ct_abdomen", postprocess=None) -> Path:
    """A training run folder per the contract: model_spec.json, checkpoints/best.pt, metrics.json."""
    import torch

    from medseg.models import build_network

    spec = dict(spec or SPEC)
    (run / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    net = build_network(spec)
    (run / "model_spec.json").write_text(json.dumps({
        "network": spec, "preset": preset, "labels": LABELS, "task": "semantic",
        "inference": {"roi_size": ROI, "overlap": 0.25, "sw_batch_size": 2, "postprocess": postprocess or {}},
    }))
    torch.save({"state_dict": net.state_dict(), "epoch": 3, "optimizer": {}}, run / "checkpoints" / "best.pt")
    (run / "metrics.json").write_text(json.dumps({"val": {"dice": {"liver": 0.91, "spleen": 0.87}}}))
    return run


def make_tiny_bundle(root: Path, name: str = "tiny_ct", **kw) -> Path:
    """Build through the CLI (`medseg bundle build`), the way a user does."""
    from medseg import cli

    run = make_run(root / f"run_{name}", **kw)
    lic = root / f"{name}_license.txt"
    lic.write_text("CC0 test data\n")
    code = cli.main(["bundle", "build", str(run), "-o", str(root / name), "--name", name,
                     "--description", "tiny test bundle", "--authors", "medseg tests",
                     "--data-source", "synthetic weights, no training data", "--data-license-file", str(lic)])
    if code != 0:
        raise RuntimeError(f"medseg bundle build exited {code}")
    return root / name


_BUILT: dict[str, Path] = {}


def shared_bundle(tmp_path_factory) -> Path:
    """One tiny bundle per test session (building costs seconds), shared by the bundle test files.
    Tests that alter it work on a copy."""
    if "tiny_ct" not in _BUILT:
        _BUILT["tiny_ct"] = make_tiny_bundle(tmp_path_factory.mktemp("bundles"))
    return _BUILT["tiny_ct"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return shared_bundle(tmp_path_factory)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_and_metadata_follow_the_monai_spec(bundle):
    from monai.bundle.utils import DEFAULT_METADATA

    from medseg.bundle.spec import check_metadata

    for rel in ("configs/metadata.json", "configs/inference.json", "configs/train.json", "configs/evaluate.json",
                "configs/medseg.json", "models/model.pt", "models/model.ts", "models/sha256sums.txt",
                "docs/README.md", "docs/data_license.txt", "tests/ref_input.nii.gz", "tests/ref_output.nii.gz"):
        assert (bundle / rel).is_file(), rel
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    # MONAI's own template lists the keys a bundle must have
    assert set(DEFAULT_METADATA) <= set(meta)
    assert check_metadata(meta) == []
    for key in ("changelog", "optional_packages_version", "name", "data_source", "data_type", "image_classes",
                "label_classes", "intended_use", "references"):
        assert key in meta
    inp = meta["network_data_format"]["inputs"]["image"]
    out = meta["network_data_format"]["outputs"]["pred"]
    assert inp["modality"] == "CT" and inp["format"] == "hounsfield" and inp["num_channels"] == 1
    assert out["num_channels"] == 3 and out["channel_def"] == {"0": "background", "1": "liver", "2": "spleen"}
    assert meta["eval_metrics"] == {"val.dice.liver": 0.91, "val.dice.spleen": 0.87}
    readme = (bundle / "docs/README.md").read_text()
    assert "0.9100" in readme and "Intended use" in readme and "Limits" in readme
    assert (bundle / "docs/data_license.txt").read_text().strip() == "CC0 test data"


def test_inference_config_is_plain_monai(bundle):
    cfg = json.loads((bundle / "configs/inference.json").read_text())
    assert cfg["network_def"]["_target_"] == "monai.networks.nets.UNet"
    targets = [t["_target_"] for t in cfg["preprocessing"]["transforms"]]
    assert targets[0] == "LoadImaged" and "Orientationd" in targets and "Spacingd" in targets
    assert not any(t.startswith("medseg") for t in targets)
    post = [t["_target_"] for t in cfg["postprocessing"]["transforms"]]
    assert post == ["Activationsd", "AsDiscreted", "Invertd", "SaveImaged"]
    assert cfg["inferer"]["_target_"] == "SlidingWindowInferer" and cfg["inferer"]["roi_size"] == ROI
    assert {"initialize", "run", "finalize", "bundle_root", "dataset_dir", "output_dir", "datalist"} <= set(cfg)
    medseg_cfg = json.loads((bundle / "configs/medseg.json").read_text())
    assert medseg_cfg["preset"] == "ct_abdomen" and medseg_cfg["labels"] == LABELS


def test_checksums_and_weights(bundle, tmp_path):
    import torch

    sums = dict(reversed(line.split("  ", 1)) for line in
                (bundle / "models/sha256sums.txt").read_text().splitlines())
    for rel, digest in sums.items():
        assert _sha(bundle / rel) == digest, rel
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    assert meta["weights_sha256"]["models/model.pt"] == _sha(bundle / "models/model.pt")
    state = torch.load(bundle / "models/model.pt", weights_only=True)
    run_state = torch.load(bundle.parent / "run_tiny_ct/checkpoints/best.pt", weights_only=True)["state_dict"]
    assert state.keys() == run_state.keys()
    assert all(torch.equal(state[k], run_state[k]) for k in state)
    # the TorchScript export computes what the state dict computes
    from medseg.models import build_network

    net = build_network(SPEC)
    net.load_state_dict(state)
    net.eval()
    ts = torch.jit.load(str(bundle / "models/model.ts"))
    x = torch.rand(1, 1, *ROI, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(ts(x), net(x), atol=1e-5)


def test_reference_pair_is_on_the_source_grid(bundle):
    import nibabel as nib

    src = nib.load(str(bundle / "tests/ref_input.nii.gz"))
    out = nib.load(str(bundle / "tests/ref_output.nii.gz"))
    assert out.shape[:3] == src.shape[:3]
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-5)
    assert nib.aff2axcodes(src.affine) == ("L", "P", "S")  # not RAS: the inverse transform is exercised
    labels = np.unique(np.asarray(out.dataobj))
    assert set(labels.tolist()) <= {0, 1, 2} and len(labels) >= 2


def test_verify_passes(bundle):
    from medseg.bundle import verify_bundle

    report = verify_bundle(bundle)
    assert report.ok, report.summary()
    assert [c.name for c in report.checks] == ["files", "metadata", "trust", "checksums", "weights", "net_in_out",
                                               "reference"]
    assert report.reference_agreement == 1.0
    assert report.reference_dice and all(d == 1.0 for d in report.reference_dice.values())


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / bundle.name
    shutil.copytree(bundle, dst)
    return dst


def test_verify_fails_on_tampered_weights_with_exit_2(bundle, tmp_path, capsys):
    import torch

    from medseg import cli

    b = _copy(bundle, tmp_path)
    state = torch.load(b / "models/model.pt", weights_only=True)
    key = next(iter(state))
    state[key] = state[key] + 0.5
    torch.save(state, b / "models/model.pt")
    code = cli.main(["bundle", "verify", str(b)])
    out, err = capsys.readouterr()
    assert code == 2
    assert "FAIL checksums" in out and "FAIL weights" in out
    assert err.strip().splitlines()[-1].startswith("medseg: error: bundle")
    assert "checksums" in err.strip().splitlines()[-1]


def test_verify_detects_a_changed_reference_output(bundle, tmp_path):
    import nibabel as nib

    from medseg.bundle import verify_bundle
    from medseg.bundle.trust import sha256_file

    b = _copy(bundle, tmp_path)
    img = nib.load(str(b / "tests/ref_output.nii.gz"))
    arr = np.asarray(img.dataobj).copy()
    arr[arr == 1] = 2  # a different answer, re-signed so only the reference check can catch it
    nib.save(nib.Nifti1Image(arr, img.affine), str(b / "tests/ref_output.nii.gz"))
    sums = b / "models/sha256sums.txt"
    lines = [f"{sha256_file(b / rel)}  {rel}" for _, rel in (ln.split("  ", 1) for ln in
                                                            sums.read_text().splitlines())]
    sums.write_text("\n".join(lines) + "\n")
    report = verify_bundle(b)
    assert not report.ok
    assert [c.name for c in report.failed] == ["reference"]


def test_metadata_checker_reports_bad_fields():
    from monai.bundle.utils import DEFAULT_METADATA

    from medseg.bundle.spec import check_metadata

    meta = json.loads(json.dumps(DEFAULT_METADATA))
    meta["network_data_format"] = {"inputs": {}, "outputs": {}}
    assert "network_data_format needs at least one input and one output" in check_metadata(meta)
    del meta["copyright"]
    meta["version"] = "one"
    problems = check_metadata(meta)
    assert "metadata lacks required key 'copyright'" in problems
    assert any("'version' must be a version string" in p for p in problems)
    meta2 = json.loads(json.dumps(DEFAULT_METADATA))
    meta2["network_data_format"]["inputs"]["image"] = {"type": "image", "format": "magnitude"}
    assert any("inputs.image lacks 'num_channels'" in p for p in check_metadata(meta2))


def test_build_refuses_bad_runs_and_leaves_nothing(tmp_path):
    from medseg.bundle import build_bundle
    from medseg.errors import BundleError, ConfigError

    run = make_run(tmp_path / "run")
    (tmp_path / "taken").mkdir()
    with pytest.raises(BundleError, match="already exists"):
        build_bundle(run, tmp_path / "taken", name="x")
    with pytest.raises(BundleError, match="model_spec.json"):
        build_bundle(tmp_path / "taken", tmp_path / "b1", name="x")
    spec = json.loads((run / "model_spec.json").read_text())
    spec["network"]["channels"] = [8, 16]  # weights no longer fit the network
    (run / "model_spec.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="does not fit"):
        build_bundle(run, tmp_path / "b2", name="x")
    with pytest.raises(ConfigError):
        build_bundle(run, tmp_path / "b3", name="../evil")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "taken"]


def test_list_and_export(bundle, tmp_path, monkeypatch, capsys):
    import onnxruntime as ort
    import torch

    from medseg.bundle import export_bundle, list_bundles, load_bundle

    monkeypatch.setenv("MEDSEG_BUNDLES", str(bundle.parent))
    rows = {r.name: r for r in list_bundles()}
    row = rows["tiny_ct"]
    assert row.version == "0.1.0" and row.modality == "CT" and row.labels == LABELS
    assert row.weights_sha256 == _sha(bundle / "models/model.pt")
    assert row.trained_on.startswith("synthetic")
    from medseg import cli

    assert cli.main(["bundle", "list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("tiny_ct\t"))
    assert row.weights_sha256[:12] in line and "1:liver,2:spleen" in line

    onnx_path = export_bundle("tiny_ct", "onnx", tmp_path / "m.onnx")
    model = load_bundle("tiny_ct")
    x = torch.rand(1, 1, 24, 16, 32, generator=torch.Generator().manual_seed(1))  # not the ROI: dynamic axes
    with torch.no_grad():
        ref = model.network(x).numpy()
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    assert np.abs(got - ref).max() < 1e-4
    ts_path = export_bundle(bundle, "torchscript", tmp_path / "m.ts")
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(ts_path))(x), torch.from_numpy(ref), atol=1e-5)


def test_metadata_checker_accepts_either_packages_key():
    """The model zoo writes the older optional_packages_version, which MONAI accepts; one of the two
    must be there."""
    from medseg.bundle.spec import check_metadata

    shipped = Path(__file__).resolve().parents[1] / "bundles" / "fluo_nuclei_2d" / "configs" / "metadata.json"
    meta = json.loads(shipped.read_text())
    assert check_metadata(meta) == []
    meta.pop("required_packages_version")
    meta.pop("optional_packages_version", None)
    meta["optional_packages_version"] = {"nibabel": "5.2.1"}
    assert check_metadata(meta) == []
    del meta["optional_packages_version"]
    assert any("required_packages_version" in p for p in check_metadata(meta))

"""ModelSpec: one schema read from both layouts (run folder model_spec.json, bundle medseg.json),
validated in its constructor; the shipped bundles' medseg.json round-trip byte for byte; the
bundle training helpers change the spec through it (no patched preset function)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from medseg.errors import BundleError, ConfigError
from medseg.inference.model_spec import SCHEMA_VERSION, ModelSpec

REPO = Path(__file__).resolve().parents[1]
NET = {"arch": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]}


@pytest.mark.parametrize("path", sorted((REPO / "bundles").glob("*/configs/medseg.json")), ids=lambda p: p.parts[-3])
def test_shipped_bundle_specs_round_trip_byte_for_byte(path):
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text)
    spec = ModelSpec.from_json(raw)
    again = spec.to_bundle_json(modality=raw["modality"], name=raw["name"],
                                monai_path_skips_postprocess=raw["monai_path_skips_postprocess"])
    assert json.dumps(again, indent=2) + "\n" == text
    # the nested layout carries the same model
    assert ModelSpec.from_json(spec.to_json()) == spec


def test_constructor_validates_every_field():
    ok = dict(network=NET, preset="ct_abdomen", labels={"0": "background", "1": "liver"}, roi_size=[16, 16, 16])
    spec = ModelSpec(**ok)
    assert spec.labels == {1: "liver"} and spec.roi_size == (16, 16, 16) and spec.spatial_dims == 3
    for bad, match in ((dict(roi_size=[16, 16]), "roi_size"), (dict(overlap=1.0), "overlap"),
                       (dict(sw_batch_size=0), "sw_batch_size"), (dict(task="x"), "task"),
                       (dict(preset="nope"), "preset"), (dict(labels={"-1": "x"}), "positive"),
                       (dict(network={"channels": [4]}), "arch"), (dict(domain={"what": 1}), "domain")):
        with pytest.raises(ConfigError, match=match):
            ModelSpec(**{**ok, **bad})


def test_from_json_names_the_file_and_refuses_unknown_versions():
    nested = ModelSpec(network=NET, preset="ct_abdomen", labels={1: "liver"}, roi_size=(16, 16, 16)).to_json()
    assert "name" not in nested  # a run without a name is named after its folder by the loader
    with pytest.raises(BundleError, match=r"^configs/medseg.json of bundle b lacks 'roi_size'$"):
        ModelSpec.from_json({"network": NET, "preset": "ct_abdomen", "labels": {}}, error=BundleError,
                            where="configs/medseg.json of bundle b")
    with pytest.raises(ConfigError, match="schema_version 2"):
        ModelSpec.from_json({**nested, "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(ConfigError, match="^run: overlap"):
        ModelSpec.from_json({**nested, "inference": {**nested["inference"], "overlap": 2}}, where="run")


def test_bundle_tools_train_with_real_preset_overrides(tmp_path, monkeypatch):
    """bundle_tools.train_run passes preset_overrides to TrainConfig (medseg.transforms.presets is
    not patched while training runs); patch_model_spec goes through ModelSpec (validated) and
    keeps the overrides."""
    sys.path.insert(0, str(REPO / "bundles"))
    try:
        import bundle_tools as bt
    finally:
        sys.path.remove(str(REPO / "bundles"))
    from test_training_loop import make_sphere_msd

    import medseg.training
    import medseg.transforms.presets as presets

    original, real_train, during = presets.preprocessing, medseg.training.train, []

    def watched(cfg, **kw):
        during.append(presets.preprocessing is original)
        return real_train(cfg, **kw)

    monkeypatch.setattr(medseg.training, "train", watched)
    ds = make_sphere_msd(tmp_path / "ds", n=2)
    run = bt.train_run(ds, tmp_path / "run", "ct_abdomen", {"arch": "unet", "channels": [4, 8], "num_res_units": 0},
                       preset_overrides={"target_spacing": [3.0, 3.0, 4.0]}, epochs=1, patch_size=(16, 16, 8),
                       val_fraction=0.5, progress=False)
    assert during == [True]
    spec = json.loads((run / "model_spec.json").read_text())
    assert spec["inference"]["preset_overrides"] == {"target_spacing": [3.0, 3.0, 4.0]}
    cfg = json.loads((run / "train_config.json").read_text())
    assert cfg["preset_overrides"] == {"target_spacing": [3.0, 3.0, 4.0]}
    new = bt.patch_model_spec(run, name="spheres", postprocess={"keep_largest_component": True})
    assert new["name"] == "spheres" and new["inference"]["preset_overrides"] == {"target_spacing": [3.0, 3.0, 4.0]}
    with pytest.raises(ConfigError, match="overlap"):
        bt.patch_model_spec(run, overlap=1.5)
    model = bt.load_run_model(run)
    assert model.name == "spheres" and model.preset_overrides == {"target_spacing": [3.0, 3.0, 4.0]}

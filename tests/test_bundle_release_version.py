"""Rebuilding a shipped bundle bumps configs/metadata.json's version and keeps its changelog
(bundles/bundle_tools.release_version, used by every bundle's training script via ship())."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundles"))

import bundle_tools as bt  # noqa: E402


def _bundle(root: Path, *, sha: str, infer: dict, version: str = "0.1.0", log: dict | None = None) -> Path:
    (root / "configs").mkdir(parents=True)
    meta = {"version": version, "changelog": log or {version: "first build"},
            "weights_sha256": {"models/model.pt": sha}}
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    (root / "configs" / "inference.json").write_text(json.dumps(infer))
    return root


def test_new_weights_bump_minor_configs_bump_patch_identical_keeps(tmp_path):
    old = _bundle(tmp_path / "old", sha="aa", infer={"x": 1}, version="0.2.3",
                  log={"0.2.3": "c", "0.2.0": "b", "0.1.0": "a"})
    v, log = bt.release_version(old, _bundle(tmp_path / "w", sha="bb", infer={"x": 1}), "retrained on v3")
    assert v == "0.3.0" and list(log) == ["0.3.0", "0.2.3", "0.2.0", "0.1.0"] and log["0.3.0"] == "retrained on v3"
    v, log = bt.release_version(old, _bundle(tmp_path / "c", sha="aa", infer={"x": 2}))
    assert v == "0.2.4" and log["0.2.4"] == "configs rebuilt, same weights" and len(log) == 4
    v, log = bt.release_version(old, _bundle(tmp_path / "same", sha="aa", infer={"x": 1}))
    assert (v, log) == ("0.2.3", {"0.2.3": "c", "0.2.0": "b", "0.1.0": "a"})
    assert bt.release_version(None, old, None) == ("0.1.0", {"0.1.0": "first build"})


def test_shipped_bundles_carry_a_changelog_entry_for_their_version():
    for meta_path in sorted((Path(__file__).resolve().parents[1] / "bundles").glob("*/configs/metadata.json")):
        meta = json.loads(meta_path.read_text())
        assert meta["version"] in meta["changelog"], meta_path
        assert list(meta["changelog"])[0] == meta["version"], meta_path  # newest first


def test_set_release_keeps_a_built_bundle_verifiable(tmp_path):
    import pytest
    from test_bundle_build import make_tiny_bundle

    from medseg.bundle import verify_bundle
    from medseg.bundle.build import set_release
    from medseg.errors import ConfigError

    bundle = make_tiny_bundle(tmp_path, name="tiny_rel")
    set_release(bundle, "0.2.0", {"0.2.0": "retrained", "0.1.0": "first build"})
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["version"] == "0.2.0" and list(meta["changelog"]) == ["0.2.0", "0.1.0"]
    assert verify_bundle(bundle).ok  # the checksum of the new metadata.json was recorded
    (bundle / "configs" / "metadata.json").write_text(json.dumps({**meta, "version": "0.3.0"}))
    assert not verify_bundle(bundle).ok  # ...and a hand edit is still caught
    with pytest.raises(ConfigError, match="no entry for version 0.4.0"):
        set_release(bundle, "0.4.0", {"0.2.0": "x"})
    with pytest.raises(ConfigError, match="MAJOR.MINOR.PATCH"):
        set_release(bundle, "v1", {"v1": "x"})


def test_ship_carries_the_declared_domain_in_the_same_release(tmp_path):
    """bundle_tools.ship on a run of a bundle named in declare_domains.DOMAINS: the built bundle's
    configs/medseg.json holds that domain, its checksum is recorded (the bundle verifies), and the
    version is the build's own (no extra patch release as declare() makes for older bundles)."""
    from declare_domains import DOMAINS
    from test_bundle_build import make_run

    from medseg.bundle import verify_bundle
    from medseg.inference.domain import validate_domain

    run = make_run(tmp_path / "run")
    (run / "metrics.json").write_text(json.dumps({"epochs_completed": 1, "epochs_planned": 1, "n_train_cases": 2,
                                                  "n_val_cases": 1, "best_val_dice_mean": 0.5, "best_epoch": 1}))
    (run / "train_config.json").write_text(json.dumps({"seed": 0, "patch_size": [16, 16, 16], "batch_size": 1,
                                                       "num_samples": 1, "lr": 0.001, "scheduler": "cosine"}))
    out = bt.ship(run, tmp_path / "ct_spine", name="ct_spine", description="tiny", data_source="synthetic",
                  license_text="CC0", readme_head="# tiny\n", changelog="first build")
    cfg = json.loads((out / "configs" / "medseg.json").read_text())
    assert cfg["domain"] == validate_domain(DOMAINS["ct_spine"])
    assert verify_bundle(out).ok
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["version"] == "0.1.0" and list(meta["changelog"]) == ["0.1.0"]

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

"""The hostile-bundle corpus (tests/hostile_bundles.py): without --trust-bundle no variant runs code,
reads outside the bundle, fetches or writes outside the output; each is refused with one line and
exit code 2. Positive control: the variants marked executes_when_trusted DO fire the canary once
the user trusts the bundle, so a silent escape would be seen."""

from __future__ import annotations

import pytest
from hostile_bundles import VARIANTS, leftovers, make_variant
from test_bundle_build import shared_bundle

from medseg.errors import BundleError

BY_NAME = {v.name: v for v in VARIANTS}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return shared_bundle(tmp_path_factory)


def test_corpus_is_large_enough():
    assert len(BY_NAME) == len(VARIANTS) >= 30
    assert sum(v.executes_when_trusted for v in VARIANTS) >= 10


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_hostile_bundle_is_refused(bundle, tmp_path, name, capsys):
    from medseg import cli
    from medseg.bundle import load_bundle, run_inference_config

    b, canary = make_variant(bundle, BY_NAME[name], tmp_path)
    root = b.parent
    with pytest.raises(BundleError):
        load_bundle(b)
    (root / "in").mkdir()
    (root / "in" / "x.nii.gz").write_bytes((bundle / "tests" / "ref_input.nii.gz").read_bytes())
    with pytest.raises(BundleError):
        run_inference_config(b, root / "in", root / "out")
    code = cli.main(["segment", str(root / "in" / "x.nii.gz"), "--bundle", str(b), "--output", str(root / "seg")])
    err = capsys.readouterr().err
    assert code == 2, err[-1500:]
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("medseg: error:") and "Traceback" not in err
    assert not canary.exists()
    assert leftovers(root, b, allowed=root / "in") == []


@pytest.mark.parametrize("name", sorted(v.name for v in VARIANTS if v.executes_when_trusted))
def test_canary_fires_when_trusted(bundle, tmp_path, name):
    """Positive control: the same payload runs when the user vouches for the bundle."""
    from medseg.bundle import load_bundle

    b, canary = make_variant(bundle, BY_NAME[name], tmp_path)
    try:
        load_bundle(b, trust=True)
    except Exception:  # noqa: BLE001 - the payload may break the network; only the canary matters here
        pass
    assert canary.exists()

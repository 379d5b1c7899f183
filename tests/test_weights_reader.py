"""Checkpoint files are hostile input: whatever bytes a ``.pt`` holds, medseg's readers answer with
their own typed one-line error, never an unpickling traceback (torch's weights-only unpickler
raises KeyError, IndexError, struct.error ... on junk) and never by running code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import BundleError, ModelError
from medseg.inference.sources.nnunet import load_checkpoint
from medseg.models.weights import read_state_dict

PREFIXES = (b"\x80\x04", b"\x80\x02", b"PK\x03\x04", b"", b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR.")


def _junk(tmp_path, i: int, prefix: bytes):
    rng = np.random.default_rng(i)
    path = tmp_path / f"junk_{i}.pt"
    path.write_bytes(prefix + rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
    return path


@pytest.mark.parametrize("prefix", PREFIXES)
def test_junk_checkpoints_are_typed_errors(tmp_path, prefix):
    for i in range(25):
        path = _junk(tmp_path, i, prefix)
        with pytest.raises(BundleError, match=f"^{path.name} is not a plain state dict and was not loaded"):
            read_state_dict(path, error=BundleError, what=path.name)
        with pytest.raises(ModelError):
            load_checkpoint(path)


def test_a_real_state_dict_reads_and_a_non_tensor_dict_is_refused(tmp_path):
    net = torch.nn.Conv3d(1, 2, 3)
    torch.save({"state_dict": net.state_dict(), "epoch": 1}, tmp_path / "ok.pt")
    state = read_state_dict(tmp_path / "ok.pt", error=ModelError, what="ok.pt")
    assert state.keys() == net.state_dict().keys() and torch.equal(state["weight"], net.weight.detach())
    torch.save({"state_dict": {"weight": [1, 2, 3]}}, tmp_path / "lists.pt")
    with pytest.raises(ModelError, match="^lists.pt does not hold a state dict of tensors$"):
        read_state_dict(tmp_path / "lists.pt", error=ModelError, what="lists.pt")


def test_weights_that_do_not_fit_are_one_typed_line():
    from medseg.models.weights import load_into

    net = torch.nn.Conv3d(1, 2, 3)
    load_into(net, torch.nn.Conv3d(1, 2, 3).state_dict(), error=ModelError, what="x")
    with pytest.raises(ModelError, match=r"^w.pt does not fit: Error\(s\) in loading state_dict for Conv3d: "
                                         r"size mismatch for weight") as err:
        load_into(net, torch.nn.Conv3d(1, 4, 3).state_dict(), error=ModelError, what="w.pt does not fit")
    assert "\n" not in str(err.value)

"""Memory-bounded stitching equals MONAI's sliding_window_inference (gaussian) and allocates far less."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from medseg.errors import ConfigError, ModelError
from medseg.inference.sliding_window import StitchStats, _ring_pieces, sliding_window_labels


def _monai_labels(img, net, roi, overlap, bs=2):
    with torch.no_grad():
        out = sliding_window_inference(img[None], roi, bs, net, overlap=overlap, mode="gaussian")
    return out[0].argmax(0)


def _random_net(dims, cin, cout, seed=0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    return torch.nn.Sequential(conv(cin, 6, 3, padding=1), torch.nn.Tanh(), conv(6, cout, 3, padding=1)).eval()


@pytest.mark.parametrize("roi,overlap", [((16, 16, 12), 0.25), ((12, 30, 11), 0.5)])
def test_random_net_agrees_with_monai_3d(roi, overlap):
    img = torch.randn(1, 33, 29, 23, generator=torch.Generator().manual_seed(1))
    net = _random_net(3, 1, 5)
    ref = _monai_labels(img, net, roi, overlap)
    got = sliding_window_labels(img, net, roi, overlap=overlap, sw_batch_size=3, progress=False, amp=False,
                                accumulate_dtype=torch.float16)
    assert got.shape == ref.shape and got.dtype == torch.uint8
    assert (got.long() == ref).float().mean() >= 0.999
    # float32 accumulation is the same sum as MONAI's: identical labels
    got32 = sliding_window_labels(img, net, roi, overlap=overlap, accumulate_dtype=torch.float32, progress=False, amp=False)
    assert torch.equal(got32.long(), ref)


def test_random_net_agrees_with_monai_2d_and_small_image_padding():
    img = torch.randn(2, 130, 41, generator=torch.Generator().manual_seed(2))
    net = _random_net(2, 2, 4)
    for roi in [(16, 16), (48, 64), (-1, 8)]:  # larger than the image (padded), and "full extent"
        ref = _monai_labels(img, net, roi, 0.25)
        got = sliding_window_labels(img, net, roi, overlap=0.25, progress=False, amp=False, accumulate_dtype=torch.float16)
        assert got.shape == ref.shape
        assert (got.long() == ref).float().mean() >= 0.999
        got32 = sliding_window_labels(img, net, roi, overlap=0.25, accumulate_dtype=torch.float32, progress=False, amp=False)
        assert torch.equal(got32.long(), ref)


class _Deterministic(torch.nn.Module):
    """Class scores with wide margins: class = intensity band, exact under any blending."""

    def forward(self, x):
        v = x[:, :1]
        return torch.cat([-(v - 0.3) * 100, torch.zeros_like(v), (v - 0.7) * 100], 1)


def test_deterministic_net_exact_with_float16():
    img = torch.rand(1, 33, 27, 19, generator=torch.Generator().manual_seed(3))
    ref = _monai_labels(img, _Deterministic(), (16, 16, 16), 0.5)
    got = sliding_window_labels(img, _Deterministic(), (16, 16, 16), overlap=0.5, progress=False, amp=False,
                                accumulate_dtype=torch.float16)
    assert torch.equal(got.long(), ref)
    expected = (img[0] >= 0.3).long() + (img[0] > 0.7).long()
    margin = ((img[0] - 0.3).abs() > 1e-3) & ((img[0] - 0.7).abs() > 1e-3)
    assert torch.equal(got.long()[margin], expected[margin])


def test_auto_dtype_float32_for_few_classes_float16_for_many(monkeypatch):
    import medseg.inference.sliding_window as sw

    img = torch.randn(1, 24, 24, 24, generator=torch.Generator().manual_seed(8))
    net = _random_net(3, 1, 6)
    stats = StitchStats()
    got = sliding_window_labels(img, net, (12, 12, 12), overlap=0.5, progress=False, amp=False, stats=stats)
    assert stats.accumulator_dtype == "float32"
    assert torch.equal(got.long(), _monai_labels(img, net, (12, 12, 12), 0.5))
    monkeypatch.setattr(sw, "FLOAT32_RING_BYTES", 1024)
    stats = StitchStats()
    sliding_window_labels(img, net, (12, 12, 12), overlap=0.5, progress=False, amp=False, stats=stats)
    assert stats.accumulator_dtype == "float16"


def test_single_channel_thresholds_at_zero_logit():
    img = torch.rand(1, 20, 20, 20, generator=torch.Generator().manual_seed(4)) - 0.5
    got = sliding_window_labels(img, torch.nn.Identity(), (8, 8, 8), overlap=0.25, progress=False, amp=False)
    assert torch.equal(got.bool(), img[0] > 0)


def test_scores_beyond_float16_range_switch_to_float32():
    img = torch.rand(1, 20, 18, 16, generator=torch.Generator().manual_seed(5))
    net = _random_net(3, 1, 3, seed=5)

    def huge(x):
        return net(x) * 1e6

    stats = StitchStats()
    got = sliding_window_labels(img, huge, (8, 8, 8), overlap=0.5, progress=False, amp=False, stats=stats,
                                accumulate_dtype=torch.float16)
    assert stats.accumulator_dtype == "float32" and stats.fallbacks
    assert torch.equal(got.long(), _monai_labels(img, huge, (8, 8, 8), 0.5))


class _LargestBuffer(TorchDispatchMode):
    """Records the largest tensor storage created by any torch op (an independent allocation probe)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


def test_many_class_stitching_allocates_far_less_than_monai():
    n_classes, shape, roi = 40, (48, 48, 48), (16, 16, 16)
    torch.manual_seed(6)
    net = torch.nn.Conv3d(1, n_classes, 1).eval()
    img = torch.randn(1, *shape)
    with _LargestBuffer() as probe_monai:
        ref = _monai_labels(img, net, roi, 0.25, bs=4)
    stats = StitchStats()
    with _LargestBuffer() as probe_medseg:
        got = sliding_window_labels(img, net, roi, overlap=0.25, sw_batch_size=4, progress=False, amp=False, stats=stats,
                                    accumulate_dtype=torch.float16)
    full_fp32 = n_classes * int(np.prod(shape)) * 4
    assert probe_monai.largest >= full_fp32  # MONAI holds the whole C x D x H x W float32 volume
    assert probe_medseg.largest <= full_fp32 / 3
    assert stats.accumulator_bytes <= full_fp32 / 6  # a float16 ring only roi[-1] wide
    assert (got.long() == ref).float().mean() >= 0.999


def test_tta_flip_invariant_net_has_no_disagreement():
    img = torch.rand(1, 24, 20, 16, generator=torch.Generator().manual_seed(7))
    stats = StitchStats()
    got = sliding_window_labels(img, _Deterministic(), (12, 12, 12), overlap=0.5, tta=True, progress=False, amp=False,
                                stats=stats)
    plain = sliding_window_labels(img, _Deterministic(), (12, 12, 12), overlap=0.5, progress=False, amp=False)
    assert stats.tta_disagreement == 0.0
    assert (got == plain).float().mean() > 0.999
    stats = StitchStats()
    sliding_window_labels(img, _random_net(3, 1, 4), (12, 12, 12), overlap=0.5, tta=True, progress=False, amp=False,
                          stats=stats)
    assert 0.0 < stats.tta_disagreement < 1.0


def test_ring_pieces_cover_range_once():
    pieces = _ring_pieces(13, 13 + 20, 16)
    covered = []
    for ring, local in pieces:
        assert ring.stop - ring.start == local.stop - local.start
        covered.extend(range(local.start, local.stop))
    assert covered == list(range(20))
    assert [p[0] for p in pieces] == [slice(13, 16), slice(0, 16), slice(0, 1)]


def test_bad_arguments():
    img = torch.zeros(1, 8, 8, 8)
    with pytest.raises(ConfigError):
        sliding_window_labels(img, torch.nn.Identity(), (4, 4, 4), overlap=1.0)
    with pytest.raises(ModelError):
        sliding_window_labels(img, torch.nn.Identity(), (4, 4, 4, 4), overlap=0.5)
    with pytest.raises(ModelError):
        sliding_window_labels(torch.zeros(8, 8), torch.nn.Identity(), (4, 4, 4), overlap=0.5)
    with pytest.raises(ModelError, match="window size"):
        sliding_window_labels(img, lambda x: x[..., :2], (4, 4, 4), progress=False, amp=False)


@pytest.mark.gpu
def test_cuda_amp_channels_last_matches_cpu_and_oom_falls_back():
    img = torch.randn(1, 64, 48, 40, generator=torch.Generator().manual_seed(9))
    net = _random_net(3, 1, 5)
    cpu = sliding_window_labels(img, net, (32, 32, 32), overlap=0.5, progress=False)
    gpu = sliding_window_labels(img, net.cuda(), (32, 32, 32), overlap=0.5, device="cuda", progress=False)
    assert (gpu == cpu).float().mean() >= 0.995  # autocast float16 on CUDA

    calls = []

    def tight(x):  # pretend the GPU only fits one window at a time
        calls.append(x.shape[0])
        if x.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("simulated")
        return net(x)

    stats = StitchStats()
    got = sliding_window_labels(img, tight, (32, 32, 32), overlap=0.5, sw_batch_size=4, device="cuda",
                                progress=False, stats=stats)
    assert stats.sw_batch_size == 1 and any("sw_batch_size" in f for f in stats.fallbacks)
    assert (got == gpu).float().mean() >= 0.999


@pytest.mark.slow
def test_bench_stitching_peak_rss_in_fresh_processes(tmp_path):
    """Peak RSS (VmHWM) per method in fresh subprocesses, through the benchmark script.

    160^3 with 100 classes: big enough that the stitching buffers, not the per-window network
    output (the same in both), decide the peak (at 128^3 with 64^3 windows the window-size terms
    are most of medseg's peak and the ratio is about 0.64)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_stitching.py"
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, str(script), "--size", "160", "--roi", "64", "--classes", "100",
                    "--out", str(out)], check=True, capture_output=True, text=True)
    report = json.loads(out.read_text())
    assert report["label_agreement"] >= 0.999
    assert report["peak_above_baseline_ratio"] <= 0.6


def test_cpu_amp_uses_native_bf16_only_and_agrees_with_float32(monkeypatch):
    """amp=True computes the network in bfloat16 on a CPU with native bf16 (AVX512-BF16/AMX), which
    must keep the labels of float32 on >= 99% of voxels even for a random network (noisy scores);
    without native bf16 it stays float32 and equals float32 exactly."""
    from medseg.inference import sliding_window as sw

    torch.manual_seed(0)
    img = torch.randn(1, 40, 36, 28)
    net = _random_net(3, 1, 4)
    ref = sliding_window_labels(img, net, (16, 16, 16), overlap=0.5, progress=False, amp=False)
    stats = StitchStats()
    got = sliding_window_labels(img, net, (16, 16, 16), overlap=0.5, progress=False, stats=stats)
    if sw.cpu_has_native_bf16():
        assert stats.precision == "bfloat16"
        assert (got == ref).float().mean().item() >= 0.99
    else:
        assert stats.precision == "float32" and torch.equal(got, ref)
    monkeypatch.setattr(sw, "cpu_has_native_bf16", lambda: False)
    stats = StitchStats()
    assert torch.equal(sliding_window_labels(img, net, (16, 16, 16), overlap=0.5, progress=False, stats=stats), ref)
    assert stats.precision == "float32"

"""Shared test fixtures. Heavy fixtures live next to the tests that use them."""

from __future__ import annotations

import os

import pytest
from skip_summary import pytest_terminal_summary  # noqa: F401  (at the end: skipped tests + install command)

os.environ.setdefault("MEDSEG_PROGRESS", "0")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_gpu = False
    skip_gpu = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def sample_cache(tmp_path_factory):
    """Folder of real sample data fetched through medseg.data (cached across runs)."""
    from medseg.data import cache_dir

    return cache_dir()

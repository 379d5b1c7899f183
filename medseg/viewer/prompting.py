"""Which prompt method ``medseg view`` uses, and what the page says about it.

The viewer's own default differs from :func:`medseg.prompt.segment`'s: for a 3D image it is the
trained network ``promptable`` (bundle ``promptable_3d``) whenever that bundle's weights are there,
because a prompt is answered while someone waits at the screen: the network takes about 0.1 s per
box on 256x256x128 on a CPU, the classical methods one to several seconds
(``benchmarks/results/viewer_prompt.json``). Its Dice is lower than the GrabCut-like ``auto`` on
some sets and higher on others (``bundles/promptable_3d/docs/README.md``), which is why
``medseg.prompt.segment`` keeps ``auto``; in the viewer every answer is looked at and corrected
(clicks, brush), so speed comes first. A 2D image takes ``promptable_2d`` the same way when that
bundle is there; no bundle: ``auto`` (classical).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CLASSICAL = {"auto": "classical: GrabCut-like for a box, region growing for clicks",
             "region-growing": "classical: region growing", "random-walker": "classical: random walker",
             "grabcut": "classical: GrabCut-like"}


def default_method(ndim: int) -> str:
    """``promptable`` when the shipped promptable bundle for ``ndim`` axes (``promptable_3d`` /
    ``promptable_2d``) has its weights here, else ``auto``."""
    from medseg.prompt import network

    return "promptable" if ndim in network.BUNDLES and network.available(ndim) else "auto"


def bundle_version(folder: Path) -> str:
    """``name version`` of a promptable bundle folder from its ``configs/metadata.json`` (folder name
    alone when it cannot be read)."""
    from medseg.prompt.network import bundle_metadata

    meta = bundle_metadata(folder)
    name = meta.get("name") if isinstance(meta.get("name"), str) else folder.name
    version = meta.get("version") if isinstance(meta.get("version"), str) else ""
    return f"{name} {version}".strip()[:80]


def describe(method: str, model: Any = None, ndim: int = 3) -> str:
    """One line for the page: the method and, for the network, which bundle (never a path)."""
    if method == "promptable":
        from medseg.prompt import network

        folder = network.resolve_bundle(model, ndim if ndim in network.BUNDLES else 3)
        return f"promptable: trained network ({bundle_version(folder)})"
    return f"{method}: {CLASSICAL.get(method, 'registered method')}"

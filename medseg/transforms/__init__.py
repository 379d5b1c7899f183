"""Preprocessing presets (MONAI dictionary transforms) and label postprocessing.

Submodules: :mod:`medseg.transforms.presets` (``preprocessing``, ``PRESETS``),
:mod:`medseg.transforms.postprocess` (connected components, hole filling, instances).
"""

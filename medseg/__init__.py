"""medseg: medical image segmentation with exact geometry.

Light on import: submodules (``medseg.io``, ``medseg.inference``, ...) load their heavy
dependencies only when used.
"""

__version__ = "0.1.0"

"""DICOM reading: series (grouped, selected, ordered along the slice normal), enhanced
multi-frame CT/MR, X-ray projections (CR/DX/MG), zip/tar archives; safe by default.

Public API::

    read_dicom(path, *, series=None, allow_missing_slices=False) -> MetaTensor
    list_series(path) -> list[SeriesInfo]
    select_series(series_list, selector) -> SeriesInfo

See :mod:`medseg.io` for the in-memory contract (RAS affine, axis order, meta keys).
"""

from __future__ import annotations

from medseg.io.dicom.read import read_dicom
from medseg.io.dicom.series import SeriesInfo, list_series, select_series

__all__ = ["SeriesInfo", "list_series", "read_dicom", "select_series"]

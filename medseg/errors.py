"""Typed errors. Every error medseg raises on purpose is a :class:`MedsegError`.

The CLI prints ``medseg: error: <message>`` on one line and exits with code 2 for any
MedsegError; anything else is a bug and exits 1. Messages never contain a patient's name,
ID or birth date: build them from UIDs, file names, shapes and tag keywords only.
"""

from __future__ import annotations


class MedsegError(Exception):
    """Base of all expected, user-facing errors (exit code 2 on the CLI)."""

    exit_code = 2


class InputError(MedsegError):
    """A file, folder or series that cannot be read as asked (corrupt, truncated, unsupported)."""


class UnsafeInputError(InputError):
    """Input refused for safety: absurd declared size, path traversal in an archive, ..."""


class SeriesSelectionError(InputError):
    """A folder holds several series (or none match the selection); the message lists them."""


class UnsupportedOptionError(InputError):
    """A read option the reader of this input cannot honour (e.g. ``series`` for a NIfTI file,
    ``kind="image"`` for a DICOM SEG); one line naming the option and the reader."""


class GeometryError(InputError):
    """Geometry is missing or inconsistent: no ImagePositionPatient, uneven spacing, missing
    slice, mixed orientations, gantry tilt, grids that do not match."""


class ConfigError(MedsegError):
    """A bad option, preset name, model spec or configuration file."""


class ModelError(MedsegError):
    """A network cannot be built, loaded or run as asked."""


class BundleError(MedsegError):
    """A MONAI bundle is malformed, fails verification, or its weights do not match."""


class TrustError(BundleError):
    """A bundle asks to run code that is not allow-listed and was not explicitly trusted."""


class EvaluationError(MedsegError):
    """Prediction and reference cannot be compared (mismatched grids, unmatched labels, ...)."""


class DataFetchError(MedsegError):
    """Sample data cannot be fetched (offline, checksum mismatch)."""


class PACSError(MedsegError):
    """A PACS (DICOMweb or DIMSE) request failed or was refused."""


class PromptError(ConfigError):
    """A prompt (click, box, extreme points, scribbles, previous mask) that cannot be used:
    outside the image, wrong number of coordinates, a box with no extent, a mask on another grid."""

"""Training: dataset formats (MSD, nnU-Net raw v2, folders, CSV), the training loop, DDP.

Public API (lazy: importing :mod:`medseg.training` loads nothing heavy)::

    TrainConfig(dataset, output, preset, network="unet", ...)       # all options of a run
    train(config, *, on_epoch_end=None) -> Path                       # the run folder
    load_dataset(path, *, format="auto", labels=None, validate=True) -> TrainingDataset
    split_cases(dataset, *, val_fraction=0.2, seed=0) -> (train_cases, val_cases)
    validate_dataset(dataset, *, tol_mm=1e-3)
    resolve_network_spec(network, *, spatial_dims, in_channels, out_channels) -> dict
"""

from __future__ import annotations

from medseg._lazy import lazy_getattr

_LAZY = {
    "TrainConfig": "medseg.training.loop",
    "train": "medseg.training.loop",
    "resolve_network_spec": "medseg.training.loop",
    "weights_digest": "medseg.training.loop",
    "TrainingDataset": "medseg.training.datasets",
    "load_dataset": "medseg.training.datasets",
    "detect_format": "medseg.training.datasets",
    "split_cases": "medseg.training.datasets",
    "validate_dataset": "medseg.training.datasets",
    "read_msd": "medseg.training.datasets",
    "read_nnunet": "medseg.training.datasets",
    "read_folder": "medseg.training.datasets",
    "read_csv": "medseg.training.datasets",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY)

"""The training loop (plain PyTorch): DiceCE loss, AdamW, cosine/poly LR, validation (network grid or deployment path),
best/last checkpoints, exact resume, seeded determinism, AMP on GPU, DDP under torchrun.

Run folder written by rank 0 (contract shared with inference and bundles)::

    RUN/model_spec.json      {"network", "preset", "labels", "inference": {...}, "task"}
    RUN/train_config.json    the configuration of the run (no patient data), with "flip_plan":
                             the augmentation's flipped voxel axes and why (see resolve_flip_axes)
    RUN/checkpoints/best.pt  {"state_dict", "epoch", "optimizer", "scheduler", "scaler", "rng", ...}
    RUN/checkpoints/last.pt  same, after the last finished epoch (what --resume restarts from)
    RUN/log.csv, RUN/curves.png, RUN/metrics.json

Reproducibility: the model is initialised from ``seed``; every epoch re-seeds the augmentation
chain and the data order from ``(seed, epoch, rank)``, and checkpoints carry the torch, numpy and
python RNG states, so a run interrupted after epoch k and resumed ends with the same weights as an
uninterrupted one (bit-for-bit on CPU with ``num_workers=0``).

Layout: options in :mod:`medseg.training.config`, the named steps in :mod:`medseg.training.steps`,
validation (network grid or the deployment path, ``TrainConfig.validation``) in
:mod:`medseg.training.validation`, RNG and determinism state in :mod:`medseg.training.state`;
this module runs the steps in order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from medseg.errors import ConfigError, MedsegError
from medseg.io.atomic import atomic_write_text
from medseg.settings import progress_enabled
from medseg.training.config import ARCHS, TrainConfig, _default_workers, resolve_network_spec, select_classes
from medseg.training.distributed import (
    DistContext,
    all_gather_objects,
    barrier,
    broadcast_object,
    cleanup,
    init_distributed,
)
from medseg.training.state import global_state_restored, set_rng_state, weights_digest
from medseg.training.steps import (
    _build_engine,
    _check_dataset,
    _checkpoint,
    _datasets,
    _loader,
    _patch_and_spec,
    _resume,
    _save_checkpoint,
    _train_epoch,
    _validate,
    _write_metrics,
)

__all__ = ["ARCHS", "TrainConfig", "resolve_network_spec", "select_classes", "train", "weights_digest"]

log = logging.getLogger(__name__)


def _progress_enabled(cfg: TrainConfig, ctx: DistContext) -> bool:
    return ctx.is_main and progress_enabled(cfg.progress)


@contextlib.contextmanager
def _typed_errors() -> Iterator[None]:
    """Re-raise a MedsegError that MONAI wrapped in a RuntimeError ("applying transform ...")."""
    try:
        yield
    except RuntimeError as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, MedsegError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def train(config: TrainConfig, *, on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None
          ) -> Path:
    """Train a segmentation network on a dataset and return the run folder.

    Works in one process or under ``torchrun`` (DDP; rank 0 writes). ``on_epoch_end(epoch, row)``
    is called on every rank after each finished epoch and its checkpoint (epoch is 1-based).
    Raises InputError for a bad dataset, ConfigError for bad options. The determinism settings
    and global RNG states the run changes are given back afterwards
    (:func:`medseg.training.state.global_state_restored`).
    """
    cfg = config
    ctx = init_distributed(cfg.device)
    try:
        with global_state_restored(deterministic=cfg.deterministic, cuda=ctx.device.type == "cuda"), _typed_errors():
            return _train(cfg, ctx, on_epoch_end)
    finally:
        cleanup(ctx)


def _train(cfg: TrainConfig, ctx: DistContext,
           on_epoch_end: Callable[[int, dict[str, Any]], None] | None) -> Path:
    """The steps of a run, in order: run folder checks, dataset checks (1), the plan, the engine
    (2), resume (3), DDP, the data (4), the run files, then per epoch: train (5), validate (6),
    checkpoint (7); finally the digests and the final metrics."""
    from medseg.training.pipeline import flip_plan
    from medseg.transforms.augment import seed_augmentation

    run = Path(cfg.output)
    last_path, best_path = run / "checkpoints" / "last.pt", run / "checkpoints" / "best.pt"
    if not cfg.resume and last_path.exists():
        raise ConfigError(f"run folder '{run.name}' already holds a run; pass --resume to continue "
                          "it or choose another --output")
    if cfg.resume and not last_path.exists():
        raise ConfigError(f"--resume: no checkpoints/last.pt in '{run.name}'")

    data = _check_dataset(cfg, ctx)
    patch, spec, model_spec = _patch_and_spec(cfg, data)
    flips = flip_plan(cfg.preset, data.declared, patch, augmentation=cfg.augmentation, remap=data.remap,
                      preset_overrides=cfg.preset_overrides)
    eng = _build_engine(cfg, ctx, spec)
    prog = _resume(cfg, ctx, last_path, eng, spec, model_spec, flips)
    net: torch.nn.Module = eng.model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(eng.model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                      else None)
    workers = _default_workers() if cfg.num_workers is None else int(cfg.num_workers)
    show = _progress_enabled(cfg, ctx)
    train_tf, train_ds, my_val, val_ds = _datasets(cfg, ctx, data, patch, workers, show)

    # the run folder appears only once the data loaded and preprocessed without error
    if ctx.is_main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run / "model_spec.json", json.dumps(model_spec, indent=2) + "\n")
        atomic_write_text(run / "train_config.json",
                          json.dumps({**cfg.to_json(), "flip_plan": flips.as_dict()}, indent=2) + "\n")
        log.info("augmentation flips voxel axes %s (%s): %s", list(flips.axes) or "none", flips.mode,
                 flips.reason)

    if prog.rng is not None:
        set_rng_state(prog.rng)
    t_start = time.monotonic()
    patches_seen = 0
    stopped_early = False
    for epoch in range(prog.start_epoch, cfg.epochs):
        t0 = time.monotonic()
        epoch_seed = (cfg.seed * 1_000_003 + epoch * 7919 + ctx.rank) % 2**31
        seed_augmentation(train_tf, epoch_seed)
        loader = _loader(cfg, ctx, train_ds, epoch, workers, epoch_seed)
        train_loss, seen, lr_used = _train_epoch(cfg, ctx, eng, net, loader, epoch, show)
        patches_seen += seen
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": None, "lr": lr_used}
        do_val = bool(data.val_cases) and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs)
        if do_val:
            _validate(cfg, ctx, eng, net, data, patch, model_spec, val_ds, my_val, row)
        row["seconds"] = round(time.monotonic() - t0, 3)
        prog.history.append(row)

        improved = do_val and not math.isnan(row["val_dice_mean"]) and row["val_dice_mean"] > prog.best
        if improved:
            prog.best, prog.best_epoch = row["val_dice_mean"], epoch + 1
            prog.best_dice = {n: row[f"val_dice_{n}"] for n in data.labels.values()}
        _checkpoint(cfg, ctx, eng, prog, data, (last_path, best_path), epoch, improved, model_spec, flips, t_start)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, dict(row))
        over = cfg.max_minutes is not None and time.monotonic() - t_start > cfg.max_minutes * 60
        if broadcast_object(bool(over), ctx) and epoch + 1 < cfg.epochs:
            stopped_early = True
            break

    digests = all_gather_objects(weights_digest(eng.model), ctx)
    seen_all = all_gather_objects(patches_seen, ctx)
    if ctx.is_main:
        if not best_path.exists():  # no validation ever ran: best = last
            _save_checkpoint(best_path, torch.load(last_path, map_location="cpu", weights_only=True))
        _write_metrics(run, prog.history, prog.best, prog.best_epoch, prog.best_dice, cfg, ctx, data.train_cases,
                       data.val_cases, stopped=stopped_early, seconds=time.monotonic() - t_start,
                       extra={"weights_sha256_per_rank": digests, "patches_seen_per_rank": seen_all})
    barrier(ctx)
    return run

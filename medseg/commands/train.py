"""``medseg train``: train a segmentation network on a dataset folder or CSV."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from medseg.errors import ConfigError

HELP = "train a segmentation network (MSD, nnU-Net raw, images/+labels/ folders or CSV)"
#: train reports its plan (flip axes, resume) as INFO lines of its own: not hidden by the quiet mode
QUIET = False


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from exc
    if len(vals) not in (2, 3) or min(vals) < 1:
        raise argparse.ArgumentTypeError("patch needs 2 or 3 positive integers, e.g. 96,96,64")
    return vals


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``medseg train``."""
    p.add_argument("dataset", type=Path, help="dataset folder or .csv (image,label[,split])")
    p.add_argument("--preset", required=True, help="preprocessing preset, e.g. ct_abdomen, mr_brain")
    p.add_argument("--network", default="unet",
                   help="network spec: JSON text, a .json file or an arch name (unet, dynunet, segresnet)")
    p.add_argument("--preset-overrides", default=None,
                   help='JSON object of preset parameters to replace, e.g. \'{"target_spacing": [2.5, 2.5, 2.5]}\'')
    p.add_argument("--output", required=True, type=Path, help="run folder to create (or resume)")
    p.add_argument("--format", default="auto", choices=["auto", "msd", "nnunet", "folder", "csv"])
    p.add_argument("--classes", default=None,
                   help="comma-separated label names to train on (others become background)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--patch", type=_ints, default=None, help="patch size in voxels, e.g. 96,96,64")
    p.add_argument("--batch-size", type=int, default=2, help="volumes per step")
    p.add_argument("--samples-per-volume", type=int, default=2, help="patches drawn per volume")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--scheduler", default="cosine", choices=["cosine", "poly"])
    p.add_argument("--val-every", type=int, default=1, help="validate every N epochs")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last.pt")
    p.add_argument("--init-weights", type=Path, default=None, metavar="CHECKPOINT",
                   help="start from these weights (a run's best.pt, a bundle's models/model.pt): fine-tuning")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on GPU")
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after the epoch in which this time budget runs out")
    p.add_argument("--flip-axes", default="auto", metavar="auto|none|0,1,2",
                   help="random flips of the augmentation: auto (default: no left-right flip when a label "
                        "is sided, e.g. kidney_left; no superior-inferior flip for ordered levels, e.g. "
                        "vertebra_L1; every axis otherwise), none, or voxel axes of the preset's grid "
                        "(RAS: 0 = left-right, 1 = posterior-anterior, 2 = inferior-superior)")
    p.add_argument("--balance-lesions", action="store_true",
                   help="draw foreground patch centres per connected component (each lesion equally often, "
                        "small ones included) instead of per voxel")


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (not at creation)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


def _show_training_log() -> None:
    """Send medseg.training's INFO lines (e.g. which axes are flipped and why) to stderr, once."""
    logger = logging.getLogger("medseg.training")
    if any(isinstance(h, _StderrHandler) for h in logger.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("medseg train: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def run(args: argparse.Namespace) -> int:
    """Build a TrainConfig from the options and call :func:`medseg.training.train`."""
    from medseg.training import TrainConfig, train
    from medseg.transforms.augment import AugmentationConfig, parse_flip_axes

    if args.max_minutes is not None and args.max_minutes <= 0:
        raise ConfigError("--max-minutes must be positive")
    overrides = {}
    if args.preset_overrides:
        try:
            overrides = json.loads(args.preset_overrides)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--preset-overrides is not valid JSON ({exc.msg})") from exc
        if not isinstance(overrides, dict):
            raise ConfigError("--preset-overrides must be a JSON object")
    augmentation = AugmentationConfig(flip_axes=parse_flip_axes(args.flip_axes),
                                      balance_components=args.balance_lesions)
    _show_training_log()
    cfg = TrainConfig(dataset=args.dataset, output=args.output, preset=args.preset,
                      preset_overrides=overrides,
                      network=args.network, format=args.format, epochs=args.epochs,
                      classes=[c.strip() for c in args.classes.split(",") if c.strip()]
                      if args.classes else None,
                      patch_size=args.patch, batch_size=args.batch_size,
                      num_samples=args.samples_per_volume, lr=args.lr, scheduler=args.scheduler,
                      val_every=args.val_every, val_fraction=args.val_fraction, seed=args.seed,
                      resume=args.resume, device=args.device, amp=not args.no_amp,
                      max_minutes=args.max_minutes, num_workers=args.num_workers,
                      augmentation=augmentation, init_weights=args.init_weights)
    out = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(out)
    return 0

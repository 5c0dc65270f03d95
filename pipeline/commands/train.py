"""``train``: one flag per ``TrainConfig`` field, a recipe file (``--config``, YAML or JSON) that
the flags override, ``--resume`` and ``--fold``."""

from __future__ import annotations

import argparse
import dataclasses

from pipeline import config, distributed, options, settings
from pipeline.training.config import RESUMABLE, TrainConfig


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``train``."""
    train = commands.add_parser(
        "train", help="train on one, several or all folds",
        description="Train; under torchrun, one model on N processes. Settings come from the "
                    "flags, over a --config file, over the defaults.")
    train.add_argument("--config", default=None,
                       help="recipe file (YAML or JSON; configs/ holds the demo's, a run's "
                            "config.json replays it); flags given too override it")
    options.add_fold(train)
    train.add_argument("--resume", action="store_true",
                       help="continue each fold from its last.pt; refused when a setting "
                            f"differs from the run's (but {', '.join(RESUMABLE)})")
    options.add_settings_flags(train, TrainConfig)
    train.set_defaults(handler=train_command, defaults_from=config_file_defaults)


def config_file_defaults(args: argparse.Namespace) -> dict:
    """The ``--config`` file's settings as parser defaults (flags given override them),
    checked first: an unknown key, a wrong type or a bad value names the file and the key."""
    if not args.config:
        return {}
    values = settings.read_file(args.config)
    names = [item.name for item in dataclasses.fields(TrainConfig)]
    defaults = {name: getattr(TrainConfig, name) for name in names}
    checked = TrainConfig.from_dict({**defaults, **values}, source=str(args.config))
    return {key: getattr(checked, key) for key in values}


def train_command(args: argparse.Namespace) -> int:
    """Train the chosen folds; print each fold's best epoch."""
    from pipeline.training import train

    cfg = options.settings_from_args(
        TrainConfig, args, data_dir=str(config.resolve_data_dir(args.data_dir).root),
        run_dir=str(config.resolve_run_dir(args.run_dir).root))
    run = config.resolve_run_dir(cfg.run_dir)
    fold_ids = options.fold_ids(args.fold, run)
    main_process = distributed.is_main_process()  # under torchrun only rank 0 writes
    # train_fold writes config.json once a fold holds its lock and has passed its checks.
    for fold, best in zip(fold_ids, train.train_folds(cfg, fold_ids, resume=args.resume)):
        if best and main_process:
            print(f"fold {fold}: best epoch {best['epoch']} score {best['val_score']:.4f} "
                  f"(all-empty {best['val_baseline']:.4f}, non-empty Dice "
                  f"{best['val_nonempty']:.4f})")
    return 0

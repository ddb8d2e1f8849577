"""Start a fold: find the trainer class by name, run it in one or several (DDP) processes (above training/ and trainers/)."""
from __future__ import annotations

from typing import Any

from xtlunet.errors import XtlunetError, look_up_option
from xtlunet.registry import find_class
from xtlunet.training.run_spec import RunSpec


def trainer_class(name: str) -> type:
    """A trainer class by class name (xtlunet.trainers) or 'module.path:Class'."""
    from xtlunet.trainers.base import Trainer

    return find_class(name, "xtlunet.trainers", Trainer, "trainer")


def _run(name: str, run: RunSpec) -> dict[str, Any]:
    """Build the trainer and fit (in this process)."""
    return trainer_class(name)(run).fit()


def train_fold(name: str, run: RunSpec) -> dict[str, Any]:
    """Validate the request, then train (spawning run.num_gpus processes when more than one).

    Returns the fold's validation summary (summary.json's content), or {} without a final validation.
    """
    from xtlunet.transfer.kernels import MODES

    look_up_option(run.transfer_mode, MODES, "transfer mode")
    if run.epochs < 1 or run.iters_per_epoch < 1:
        raise XtlunetError("--epochs and --iters-per-epoch must be at least 1", fix="give positive numbers")
    trainer = trainer_class(name)(run)  # resolves plans, data and --pretrained up front, before any process starts
    if run.num_gpus <= 1:
        return trainer.fit()
    from xtlunet.training import distributed
    from xtlunet.utils.atomic import read_json

    distributed.launch(run.num_gpus, _run, name, run)
    summary = trainer.ctx.out_dir / "validation" / "summary.json"
    return read_json(summary) if summary.is_file() else {}

"""Start a fold: find the trainer class by name, run it in one or several (DDP) processes (above training/ and trainers/)."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from xtlunet.errors import XtlunetError, look_up_option
from xtlunet.registry import find_class
from xtlunet.training.run_spec import RunSpec
from xtlunet.utils.atomic import read_json
from xtlunet.utils.lock import folder_lock


def trainer_class(name: str) -> type:
    """A trainer class by class name (xtlunet.trainers) or 'module.path:Class'."""
    from xtlunet.trainers.base import Trainer

    return find_class(name, "xtlunet.trainers", Trainer, "trainer")


def _run(name: str, run: RunSpec) -> dict[str, Any]:
    """Build the trainer and fit (in this process)."""
    return trainer_class(name)(run).fit()


def train_fold(name: str, run: RunSpec) -> dict[str, Any]:
    """Validate the request, then train (spawning run.num_gpus processes when more than one).

    The fold folder is locked while it trains (by this process only: DDP ranks it spawns, and torchrun ranks
    other than 0, take no lock). Returns the fold's validation summary (summary.json's content), or {} without a
    final validation.
    """
    from xtlunet.training import distributed
    from xtlunet.transfer.kernels import MODES

    look_up_option(run.transfer_mode, MODES, "transfer mode")
    for option, value in (("--epochs", run.epochs), ("--iters-per-epoch", run.iters_per_epoch),
                          ("--val-iters", run.val_iters), ("--save-every", run.save_every),
                          ("--num-gpus", run.num_gpus)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise XtlunetError(f"{option} must be a whole number ≥ 1, got {value!r}", fix="give a positive number")
    world = distributed.from_env().world
    if run.num_gpus > 1 and world > 1:
        raise XtlunetError(f"--num-gpus {run.num_gpus} under torchrun, which started {world} processes: each would "
                           "start its own", fix="omit --num-gpus; torchrun's --nnodes and --nproc-per-node set the "
                           "processes")
    trainer = trainer_class(name)(run)  # resolves plans, data and --pretrained up front, before any process starts
    lock = folder_lock(trainer.ctx.out_dir, "fold folder") if distributed.from_env().is_main else nullcontext()
    with lock:
        if run.num_gpus <= 1:
            return trainer.fit()
        distributed.launch(run.num_gpus, _run, name, run)
    summary = trainer.ctx.out_dir / "validation" / "summary.json"
    return read_json(summary) if summary.is_file() else {}

"""RunSpec: what one `xtlunet train` run is asked to do (parsed once by the CLI, or built in Python)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xtlunet.plans import DEFAULT_PLANS


@dataclass
class RunSpec:
    """Dataset, configuration, fold and the run's budget and options."""

    dataset: str
    configuration: str
    fold: int | str
    plans_name: str = DEFAULT_PLANS
    pretrained: Path | None = None
    transfer_mode: str = "inflate"
    epochs: int = 1000
    iters_per_epoch: int = 250
    val_iters: int = 50
    save_every: int = 5
    continue_training: bool = False
    device: str = "auto"
    num_gpus: int = 1
    seed: int = 12345
    compile: bool = False
    channels_last: bool = True
    final_validation: bool = True
    validation_tta: bool = True
    step_size: float = 0.5
    val_probabilities: bool = True        # final validation also writes CASE.npz (find-best-configuration ensembles)
    previous_trainer: str | None = None   # a cascade stage follows this trainer's lowres model (None: the trainer's)

    @property
    def fold_name(self) -> str:
        """Folder name of the fold: fold_0 … fold_4 or fold_all."""
        return f"fold_{self.fold}"

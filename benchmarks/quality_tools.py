"""How quality.py runs each tool: nnU-Net v2 through a bench trainer written into its venv, xtlunet as installed or
from a source checkout (its engine, planners and trainers)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from plan_and_preprocess import venv_python

NNUNET_TRAINER = "nnUNetTrainer_bench"
BENCH_VARS = {"epochs": "XTLUNET_BENCH_EPOCHS", "iters": "XTLUNET_BENCH_ITERS", "val_iters": "XTLUNET_BENCH_VAL_ITERS",
              "threads": "XTLUNET_BENCH_THREADS"}
NNUNET_TRAINER_MODULE = f'''"""{NNUNET_TRAINER}: nnUNetTrainer for xtlunet's benchmarks/quality.py (which writes it).

Epochs, iterations per epoch, validation iterations per epoch and CPU threads come from the environment
({", ".join(BENCH_VARS.values())}); the final validation is skipped.
The file sits in the top folder of nnunetv2/training/nnUNetTrainer/ because nnU-Net's trainer lookup imports the
modules there before it walks the sub-packages (some of which import torchvision, broken next to a CPU torch).
"""
import os

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class {NNUNET_TRAINER}(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("{BENCH_VARS["epochs"]}", self.num_epochs))
        self.num_iterations_per_epoch = int(os.environ.get("{BENCH_VARS["iters"]}", self.num_iterations_per_epoch))
        self.num_val_iterations_per_epoch = int(os.environ.get("{BENCH_VARS["val_iters"]}",
                                                               self.num_val_iterations_per_epoch))
        threads = os.environ.get("{BENCH_VARS["threads"]}")
        if threads and self.device.type == "cpu":  # nnUNetv2_train sets as many threads as CPUs on the CPU
            torch.set_num_threads(int(threads))

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("final validation skipped ({NNUNET_TRAINER})")
'''
# Runs `python -m xtlunet` from a source checkout on PYTHONPATH: its xtlunet/ is found there, and its top-level
# planners/ and trainers/ become xtlunet.planners / xtlunet.trainers (setup.py's package_dir), not the installed ones.
CHECKOUT_FINDER = """
import importlib.util, runpy, sys
from pathlib import Path
ROOT = Path(sys.argv.pop(1))
class CheckoutFolders:
    @staticmethod
    def find_spec(name, path=None, target=None):
        parts = name.split('.')
        folder = {('xtlunet',): 'xtlunet', ('xtlunet', 'planners'): 'planners',
                  ('xtlunet', 'trainers'): 'trainers'}.get(tuple(parts))
        init = ROOT / folder / '__init__.py' if folder else None
        if init is not None and init.is_file():   # ahead of any installed (also editable) xtlunet
            return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
        return None
sys.meta_path.insert(0, CheckoutFolders)
"""
RUN_XTLUNET = "sys.argv[0] = 'xtlunet'\nrunpy.run_module('xtlunet', run_name='__main__', alter_sys=True)\n"
SHOW_ORIGIN = ("import json, xtlunet, xtlunet.planners, xtlunet.trainers\n"
               "print(json.dumps({'version': getattr(xtlunet, '__version__', '?'), 'xtlunet': xtlunet.__path__[0], "
               "'planners': xtlunet.planners.__path__[0], 'trainers': xtlunet.trainers.__path__[0]}))\n")


def xtlunet_prefix(python: str, checkout: Path | None) -> list[str]:
    """The start of every xtlunet command: `python -m xtlunet`, or the checkout bootstrap with --xtlunet-pythonpath."""
    if checkout is None:
        return [python, "-m", "xtlunet"]
    return [python, "-c", CHECKOUT_FINDER + RUN_XTLUNET, str(checkout)]


def xtlunet_origin(python: str, checkout: Path | None, env: dict[str, str]) -> dict[str, str]:
    """Version of the xtlunet the commands run, and the folders its engine, planners and trainers come from."""
    cmd = [python, "-c", CHECKOUT_FINDER + SHOW_ORIGIN, str(checkout)] if checkout else [python, "-c", SHOW_ORIGIN]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"cannot import xtlunet with {python}"
                 + (f" and PYTHONPATH {env.get('PYTHONPATH')}" if checkout else "") + f":\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def install_nnunet_trainer(venv: Path) -> Path:
    """Write (or refresh) the nnUNetTrainer_bench module into the top trainer folder of the venv's nnunetv2."""
    code = "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"
    proc = subprocess.run([str(venv_python(venv)), "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"cannot import nnunetv2 in {venv}:\n{proc.stderr[-3000:]}")
    path = Path(proc.stdout.strip()) / "training" / "nnUNetTrainer" / f"{NNUNET_TRAINER}.py"
    if not path.is_file() or path.read_text() != NNUNET_TRAINER_MODULE:
        path.write_text(NNUNET_TRAINER_MODULE)
    return path

"""Ablation of the XTL protocol on the built-in examples: Scratch vs TL vs XTL × transfer mode × encoder norm.

Writes the examples (brain-ms for segmentation, prostate for lesion classification, mammo for the 2D stage),
trains the mammogram encoder with `xtlunet pretrain-2d` (from --tl-weights when given: the paper's chain
natural images → mammograms), then runs every cell as one `xtlunet experiment` of a single arm on a fixed small
budget. The cells of one normalisation share one plan (made under the mammogram encoder's constraint, with
`--transfer-norm`); every transfer mode has its own plans name, so the experiment's recipe check keeps the
variants apart. Each cell reports its cross-validated Dice (brain-ms: mean per-case Dice over the validation
cases of all folds, case bootstrap) or AUC (prostate: findings pooled over the folds, patient bootstrap) with a
95 % CI, its wall time, and the command that reproduces it (in the script's data roots).

TL needs natural-image weights of the encoder family (a torchvision state dict, e.g. ImageNet resnet18) given with
--tl-weights: nothing is downloaded, so without them the TL rows are left out and the XTL chain starts from random
weights (the table says so).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _measure import machine_info, release_work, write_results  # noqa: E402

EXAMPLES = {"brain-ms": (501, "3d_fullres"), "prostate": (502, "3d_roi")}
ARMS = ("ScratchTrainer", "TLTrainer", "XTLTrainer")
MODES = ("inflate", "center", "acs")
NORMS = ("instance", "batch")
NO_MODE = "-"   # Scratch has no transfer mode


@dataclass
class Cell:
    """One arm × transfer mode × norm on one example, and its result."""

    example: str
    arm: str
    mode: str
    norm: str
    plans: str
    command: list[str]
    metric: str = ""
    value: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    n: int = 0
    chain: str = ""
    seconds: float = float("nan")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", nargs="+", choices=list(EXAMPLES), default=list(EXAMPLES),
                   help="built-in examples to run (brain-ms prostate)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                   help="arms (TLTrainer only runs with --tl-weights)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="transfer modes (all three)")
    p.add_argument("--norms", nargs="+", choices=NORMS, default=list(NORMS), help="--transfer-norm values (both)")
    p.add_argument("--arch", default="resnet18", help="encoder family of the 2D stage (resnet18)")
    p.add_argument("--tl-weights", type=Path, default=None,
                   help="natural-image weights of --arch (torchvision state dict): the TL arm and the start of the "
                        "mammogram stage")
    p.add_argument("--folds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="folds of every cell (0 1 2 3 4)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per fold (2)")
    p.add_argument("--iters", type=int, default=4, help="iterations per epoch (4)")
    p.add_argument("--val-iters", type=int, default=2, help="validation iterations per epoch (2)")
    p.add_argument("--gpu-memory-gb", type=float, default=0.7,
                   help="memory target of the plans (0.7: a resnet18 plan that trains in about a second per step "
                        "on 2 CPU cores; give your GPU's for real runs)")
    p.add_argument("--pretrain-epochs", type=int, default=4, help="epochs of the mammogram stage (4)")
    p.add_argument("--pretrain-iters", type=int, default=10, help="iterations per epoch of the mammogram stage (10)")
    p.add_argument("--device", default="cpu", help="device of every run (cpu)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of each CI (2000)")
    p.add_argument("--work", type=Path, default=None, help="work folder (kept); default: a temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown here")
    args = p.parse_args(argv)
    for name in ("epochs", "iters", "pretrain_epochs", "pretrain_iters", "n_boot"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.tl_weights is not None and not args.tl_weights.is_file():
        p.error(f"--tl-weights {args.tl_weights} is not a file")
    if any(not 0 <= k <= 4 for k in args.folds):
        p.error("--folds take values 0 to 4")
    return args


def roots_env(work: Path) -> dict[str, str]:
    """The environment of every xtlunet command: data roots under the work folder, quiet, no DA workers."""
    env = {**os.environ, "XTLUNET_n_proc_DA": "0"}
    env.update({f"XTLUNET_{k}": str(work / k) for k in ("raw", "preprocessed", "results")})
    return env


def xtlunet(args: Sequence[str], env: dict[str, str]) -> float:
    """Run `xtlunet -q ARGS` (this interpreter's xtlunet); exit with its error on failure; return the seconds."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "xtlunet", "-q", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"xtlunet {shlex.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def prepare(args: argparse.Namespace, work: Path, env: dict[str, str]) -> Path:
    """Write the examples and train the mammogram encoder; return its checkpoint."""
    for name in [*args.examples, "mammo"]:
        xtlunet(["example", name], env)
    ckpt = work / f"mammo_{args.arch}.pth"
    init = ["--init", str(args.tl_weights)] if args.tl_weights else []
    seconds = xtlunet(["pretrain-2d", "-d", "503", "--arch", args.arch, "--budget", "tiny", *init,
                       "--epochs", str(args.pretrain_epochs), "--iters-per-epoch", str(args.pretrain_iters),
                       "--device", args.device, "-o", str(ckpt)], env)
    print(f"mammogram stage ({args.arch}{', from --tl-weights' if init else ', random init'}): {seconds:.0f} s",
          flush=True)
    return ckpt


def plan_cells(args: argparse.Namespace, ckpt: Path) -> list[Cell]:
    """Every cell to run, in order: per example and norm, Scratch once, then each transfer arm × mode."""
    arms = [a for a in args.arms if a != "TLTrainer" or args.tl_weights is not None]
    weights = ["--xtl-weights", str(ckpt), *(["--tl-weights", str(args.tl_weights)] if args.tl_weights else [])]
    budget = ["--folds", *map(str, args.folds), "--epochs", str(args.epochs), "--iters-per-epoch", str(args.iters),
              "--val-iters", str(args.val_iters), "--val-no-tta", "--device", args.device,
              "--gpu-memory-gb", str(args.gpu_memory_gb)]
    cells = []
    for example in args.examples:
        dataset, conf = EXAMPLES[example]
        for norm in args.norms:
            for i, mode in enumerate(args.modes):
                plans = f"ablation_{norm}_{mode}"
                for arm in arms:
                    if arm == "ScratchTrainer" and i > 0:
                        continue   # Scratch does not depend on the transfer mode: once per norm
                    cmd = ["experiment", "-d", str(dataset), "-c", conf, "--arms", arm, *weights,
                           "--transfer-mode", mode, "--transfer-norm", norm, "--plans-name", plans, *budget]
                    cells.append(Cell(example, arm, NO_MODE if arm == "ScratchTrainer" else mode, norm, plans, cmd))
    return cells


def run_cell(cell: Cell, args: argparse.Namespace, work: Path, env: dict[str, str]) -> None:
    """Train the cell's arm on every fold (one experiment) and score it over the folds."""
    from xtlunet.evaluation.compare import cross_validated_score

    cell.seconds = xtlunet(cell.command, env)
    dataset, conf = EXAMPLES[cell.example]
    folder = next((work / "results").glob(f"Dataset{dataset}_*/{cell.arm}__{cell.plans}__{conf}"))
    score = cross_validated_score(folder, args.folds, n_boot=args.n_boot)
    cell.metric, cell.value, cell.ci_low, cell.ci_high, cell.n = (score["metric"], score["value"], score["ci_low"],
                                                                 score["ci_high"], score["n"])
    record = json.loads(next(folder.parent.glob(f"experiment_{cell.plans}_{conf}.json")).read_text())
    cell.chain = next(a["chain"] for a in record["arms"] if a["trainer"] == cell.arm)


def shown_command(cell: Cell, work: Path) -> str:
    """The cell's command as a user types it, paths under the work folder written as $WORK/…"""
    return "xtlunet " + shlex.join(cell.command).replace(str(work), "$WORK")


def markdown(cells: list[Cell], args: argparse.Namespace, work: Path) -> str:
    """The ablation table (one row per cell) and how it was made."""
    lines = ["| example | arm | transfer mode | norm | metric | value (95 % CI) | n | time (s) | weights chain |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in cells:
        lines.append(f"| {c.example} | {c.arm} | {c.mode} | {c.norm} | {c.metric} | {c.value:.3f} "
                     f"({c.ci_low:.3f}–{c.ci_high:.3f}) | {c.n} | {c.seconds:.0f} | {c.chain} |")
    lines += ["", f"Budget: folds {' '.join(map(str, args.folds))}, {args.epochs} epochs × {args.iters} iterations, "
              f"{args.val_iters} validation iterations, plans for {args.gpu_memory_gb:g} GB, device {args.device}; "
              f"mammogram stage {args.arch}, {args.pretrain_epochs} × {args.pretrain_iters} iterations"
              + ("" if args.tl_weights else " from random weights (no --tl-weights: TL rows left out)") + ".",
              "", "Commands (data roots: `XTLUNET_raw/_preprocessed/_results` = `$WORK/raw`, …):", ""]
    lines += [f"- {c.example} {c.arm} {c.mode} {c.norm}: `{shown_command(c, work)}`" for c in cells]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ablation and print (and write) its table."""
    args = parse_args(argv)
    work = (args.work or Path(tempfile.mkdtemp(prefix="xtlunet-ablation-"))).absolute()
    work.mkdir(parents=True, exist_ok=True)
    env = roots_env(work)
    started = time.perf_counter()
    try:
        ckpt = prepare(args, work, env)
        cells = plan_cells(args, ckpt)
        for i, cell in enumerate(cells, 1):
            print(f"[{i}/{len(cells)}] {cell.example} {cell.arm} {cell.mode} {cell.norm} ...", flush=True)
            run_cell(cell, args, work, env)
            print(f"    {cell.metric} {cell.value:.3f} ({cell.ci_low:.3f}–{cell.ci_high:.3f}), {cell.seconds:.0f} s",
                  flush=True)
        table = markdown(cells, args, work)
        print("\n" + table)
        print(f"total {(time.perf_counter() - started) / 60:.1f} min")
        if args.markdown:
            args.markdown.write_text(table)
            print(f"wrote {args.markdown}")
        if args.json:
            write_results(args.json, {"cells": [asdict(c) for c in cells], "options": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "machine": machine_info(), "total_s": time.perf_counter() - started})
    finally:
        release_work(work, args.work, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())

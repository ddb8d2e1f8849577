"""Benchmark the segmentation quality of xtlunet against nnU-Net v2 after the same short training of fold 0.

Writes the brain-ms example (or takes a raw dataset of yours with --dataset-id and --raw), plans 3d_fullres with
each tool's own planner for the same GPU-memory target, trains fold 0 of each with its own plan and trainer for the
same number of epochs and iterations on the same split, predicts imagesTs with each model without test-time
mirroring, and scores both prediction folders against labelsTs with one evaluation code (xtlunet's
evaluate_segmentation_folders, imported by this script): Dice per class (mean over cases), pooled Dice
(2·ΣTP / (ΣP + ΣR) over all test cases) and pooled lesion-wise F1. Also times the training (s/iteration).

nnU-Net v2 runs from its own virtual environment (created on first use), through a trainer subclass written into
that environment: nnUNetTrainer with the epoch and iteration counts of this benchmark and no final validation.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import (Measurement, add_common_arguments, machine_info, release_work, run_or_exit,  # noqa: E402
                      write_results)
from plan_and_preprocess import (BUSY_FRACTION, CONFIGURATION, DATASET_ID, NNUNET, XTLUNET,  # noqa: E402
                                 PlanSummary, ensure_nnunet_venv, fresh, make_dataset, package_version, tool_env,
                                 venv_python, wait_for_idle)
from quality_report import Dataset, ToolRun, Training, report, score  # noqa: E402
from quality_tools import (BENCH_VARS, NNUNET_TRAINER, install_nnunet_trainer, xtlunet_origin,  # noqa: E402
                           xtlunet_prefix)
from train_step import contended, fmt_axes, run_step, threads_env  # noqa: E402

HERE = Path(__file__).resolve().parent
TOOLS = (XTLUNET, NNUNET)  # training order: xtlunet first, so that its splits_final.json exists for the check
XTLUNET_TRAINER = "ScratchTrainer"
NNUNET_PLANS = "nnUNetPlans"
SPLIT_SEED = 12345  # nnU-Net's (and xtlunet's) seed of the 5-fold split
# 400 iterations of ~1.5 s on 2 idle CPU cores per tool: about 22 minutes in all (see benchmarks/README.md)
DEFAULTS = {"cases": 30, "test_cases": 10, "epochs": 10, "iters": 40, "val_iters": 4, "gpu_memory_gb": 1.0}


# ---------------------------------------------------------------------------------------------------------------
# The dataset and the environments
# ---------------------------------------------------------------------------------------------------------------

def find_dataset(raw: Path, dataset_id: int, generated: bool) -> Dataset:
    """The raw dataset `dataset_id` under `raw`; exits unless it has imagesTs and labelsTs for every test case."""
    found = sorted(raw.glob(f"Dataset{dataset_id:03d}_*"))
    if len(found) != 1:
        sys.exit(f"expected one Dataset{dataset_id:03d}_* folder in {raw}, found {len(found)}")
    folder = found[0]
    meta = json.loads((folder / "dataset.json").read_text())
    ending = meta["file_ending"]
    labels = {}
    for name, value in meta["labels"].items():
        if not isinstance(value, int):
            sys.exit(f"label {name!r} of {folder / 'dataset.json'} is a region ({value}); this benchmark scores "
                     "integer labels only")
        if value != 0:
            labels[name] = value
    channels = [f"_{int(c):04d}{ending}" for c in meta["channel_names"]]
    images, refs = folder / "imagesTs", folder / "labelsTs"
    test_ids = sorted(f.name[: -len(channels[0])] for f in images.glob(f"*{channels[0]}")) if images.is_dir() else []
    if not test_ids:
        sys.exit(f"no test images (*{channels[0]}) in {images}: the benchmark predicts imagesTs")
    missing = [c for c in test_ids if not (refs / f"{c}{ending}").is_file()]
    if missing:
        sys.exit(f"{len(missing)} test case(s) have no reference in {refs} (e.g. {missing[0]}{ending})")
    return Dataset(dataset_id, folder.name, raw, labels, ending, test_ids, generated)


def make_envs(args: argparse.Namespace, raw: Path, outs: dict[str, Path], venv: Path) -> dict[str, dict[str, str]]:
    """Each tool's environment: data roots, threads; nnU-Net's bench variables (see train_env for the rest)."""
    envs = {tool: threads_env(tool_env(tool, raw, outs[tool], args.np, None, venv), args.threads) for tool in TOOLS}
    envs[NNUNET].update({"nnUNet_compile": "false", BENCH_VARS["epochs"]: str(args.epochs),
                         BENCH_VARS["iters"]: str(args.iters), BENCH_VARS["val_iters"]: str(args.val_iters),
                         BENCH_VARS["threads"]: str(args.threads)})
    if args.xtlunet_pythonpath is not None:
        envs[XTLUNET]["PYTHONPATH"] = os.pathsep.join(
            [str(args.xtlunet_pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])])
    return envs


def train_env(env: dict[str, str], da_workers: int) -> dict[str, str]:
    """A training environment: the same number of augmentation workers for both trainers.

    Not set for planning: nnU-Net's planner gives torch as many threads as nnUNet_n_proc_DA, and fails on 0.
    """
    return {**env, "nnUNet_n_proc_DA": str(da_workers), "XTLUNET_n_proc_DA": str(da_workers)}


# ---------------------------------------------------------------------------------------------------------------
# Plan, train, predict
# ---------------------------------------------------------------------------------------------------------------

def plan_command(tool: str, args: argparse.Namespace, data: Dataset, xt: list[str], venv: Path) -> list[str]:
    """A tool's plan-and-preprocess command for 3d_fullres at --gpu-memory-gb."""
    gb = f"{args.gpu_memory_gb:g}"
    if tool == NNUNET:
        return [str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", str(data.id), "-c", CONFIGURATION,
                "-np", str(args.np), "-npfp", str(args.np), "-gpu_memory_target", gb]
    return [*xt, "-q", "plan-and-preprocess", "-d", str(data.id), "-c", CONFIGURATION, "-np", str(args.np),
            "--gpu-memory-gb", gb, *(["--reorient"] if args.xtlunet_reorient else [])]


def read_plan(tool: str, pre: Path) -> dict[str, Any]:
    """A tool's 3d_fullres plan: spacing, median shape, patch, batch, transpose and network widths."""
    name, shape_key = ((NNUNET_PLANS, "median_image_size_in_voxels") if tool == NNUNET
                       else ("xtlunetPlans", "median_shape"))
    plans = json.loads((pre / f"{name}.json").read_text())
    conf = plans["configurations"].get(CONFIGURATION)
    if conf is None:
        sys.exit(f"{tool} planned no {CONFIGURATION} configuration ({pre / f'{name}.json'})")
    arch = conf.get("architecture") or {}
    widths = arch.get("arch_kwargs", {}).get("features_per_stage") if tool == NNUNET else arch.get("widths")
    summary = PlanSummary([float(v) for v in conf["spacing"]], [float(v) for v in conf[shape_key]],
                          [int(v) for v in conf["patch_size"]], int(conf["batch_size"]),
                          [int(v) for v in plans["transpose_forward"]])
    return {**asdict(summary), "widths": widths, "plans_file": str(pre / f"{name}.json")}


def train_command(tool: str, args: argparse.Namespace, data: Dataset, xt: list[str], venv: Path,
                  seed: int | None) -> list[str]:
    """A tool's command training fold 0 for --epochs × --iters, without final validation (xtlunet with `seed`)."""
    if tool == NNUNET:  # the epoch and iteration counts travel in the environment (BENCH_VARS)
        return [str(venv / "bin" / "nnUNetv2_train"), str(data.id), CONFIGURATION, "0", "-tr", NNUNET_TRAINER,
                "-p", NNUNET_PLANS, "-device", args.device]
    return [*xt, "-q", "train", str(data.id), CONFIGURATION, "0", "-tr", XTLUNET_TRAINER, "--epochs", str(args.epochs),
            "--iters-per-epoch", str(args.iters), "--val-iters", str(args.val_iters), "--device", args.device,
            "--no-final-validation", "--seed", str(seed)]


def predict_command(tool: str, args: argparse.Namespace, data: Dataset, xt: list[str], venv: Path,
                    out_dir: Path) -> list[str]:
    """A tool's command predicting imagesTs with fold 0, without test-time mirroring."""
    images = data.folder / "imagesTs"
    if tool == NNUNET:
        return [str(venv / "bin" / "nnUNetv2_predict"), "-i", str(images), "-o", str(out_dir), "-d", str(data.id),
                "-c", CONFIGURATION, "-f", "0", "-tr", NNUNET_TRAINER, "-p", NNUNET_PLANS, "-device", args.device,
                "--disable_tta", "-npp", "1", "-nps", "1", "--disable_progress_bar"]
    return [*xt, "-q", "predict", "-i", str(images), "-o", str(out_dir), "-d", str(data.id), "-c", CONFIGURATION,
            "-f", "0", "-tr", XTLUNET_TRAINER, "--no-tta", "--device", args.device, "-npp", "1"]


def fold_folder(tool: str, results: Path, data: Dataset) -> Path:
    """fold_0 of a tool's trained model (TRAINER__PLANS__3d_fullres)."""
    trainer = NNUNET_TRAINER if tool == NNUNET else XTLUNET_TRAINER
    found = sorted((results / data.name).glob(f"{trainer}__*__{CONFIGURATION}/fold_0"))
    if len(found) != 1:
        sys.exit(f"expected one {trainer}__*__{CONFIGURATION}/fold_0 in {results / data.name}, found {len(found)}")
    return found[0]


def epoch_times(tool: str, fold: Path) -> list[float]:
    """Seconds of each training epoch (training + per-epoch validation iterations) from the tool's training log."""
    if tool == NNUNET:
        logs = sorted(fold.glob("training_log_*.txt"))
        text = logs[-1].read_text() if logs else ""
        return [float(v) for v in re.findall(r"Epoch time: ([0-9.]+) s", text)]
    log = fold / "training_log.txt"
    text = log.read_text() if log.is_file() else ""
    return [float(v) for v in re.findall(r"^\S+ \S+ epoch \d+:.* time ([0-9.]+)s$", text, flags=re.M)]


def fold0(splits_file: Path) -> tuple[set[str], set[str]] | None:
    """(train, val) case ids of fold 0 of a splits_final.json, or None when there is none."""
    if not splits_file.is_file():
        return None
    first = json.loads(splits_file.read_text())[0]
    return set(first["train"]), set(first["val"])


def align_splits(venv: Path, pre: dict[str, Path], nn_data: Path) -> str:
    """Have nnU-Net train fold 0 on xtlunet's split: compare with the split nnU-Net would make; copy if different."""
    ours = fold0(pre[XTLUNET] / "splits_final.json")
    target = pre[NNUNET] / "splits_final.json"
    if ours is None:
        return "xtlunet wrote no splits_final.json: nnU-Net makes its own"
    ids = sorted(p.name[: -len(".pkl")] for p in nn_data.glob("*.pkl"))
    code = ("import json, sys; from nnunetv2.utilities.crossval_split import generate_crossval_split as g; "
            f"print(json.dumps(g(json.loads(sys.argv[1]), seed={SPLIT_SEED}, n_splits=5)))")
    proc = subprocess.run([str(venv_python(venv)), "-c", code, json.dumps(ids)], capture_output=True, text=True)
    theirs = None
    if proc.returncode == 0:
        first = json.loads(proc.stdout.strip().splitlines()[-1])[0]
        theirs = set(first["train"]), set(first["val"])
    if theirs == ours:
        return (f"fold 0 identical ({len(ours[0])} train / {len(ours[1])} val cases): nnU-Net's own split "
                f"(KFold, seed {SPLIT_SEED}, sorted case ids) equals xtlunet's")
    shutil.copy(pre[XTLUNET] / "splits_final.json", target)
    return (f"fold 0 differed ({'nnU-Net split unavailable' if theirs is None else 'val ' + str(sorted(theirs[1]))}): "
            f"copied xtlunet's splits_final.json into {pre[NNUNET]}")


def run_tool_step(label: str, cmd: list[str], env: dict[str, str], work: Path, args: argparse.Namespace,
                  timed: bool) -> Measurement:
    """One measured command of the benchmark; a timed one waits for an idle machine first (--wait-idle)."""
    if timed and args.wait_idle > 0:
        wait_for_idle(args.wait_idle)
    print(f"  {label} ...", flush=True)
    m = run_or_exit(cmd, env, label, cwd=work, timeout_s=args.timeout)
    print(f"  {label}: {m.wall_s:.1f} s" + (f"  [busy machine: other processes used {m.other_cpu_s:.0f} CPU-s]"
                                             if contended(m) else ""), flush=True)
    return m


def train_tool(tool: str, run: Training, cmd: list[str], env: dict[str, str], work: Path, args: argparse.Namespace,
               results: Path, data: Dataset) -> None:
    """Train fold 0 (into a fresh results folder) and record wall time, CPU time, peak memory, epoch times and
    s/iteration."""
    fresh(results)
    run.commands["train"] = cmd
    label = f"{tool} training{f' {run.index}' if args.repeats > 1 else ''} ({args.epochs} epochs x {args.iters} " \
            "iterations)"
    m = run_tool_step(label, cmd, env, work, args, timed=True)
    fold = fold_folder(tool, results, data)
    if not (fold / "checkpoint_final.pth").is_file():
        sys.exit(f"{tool} training wrote no {fold / 'checkpoint_final.pth'}\n{m.output_tail}")
    epochs = epoch_times(tool, fold)
    iterations = args.epochs * args.iters
    logged = len(epochs) == args.epochs
    train_s = sum(epochs) if logged else m.wall_s
    run.seconds["train"] = m.wall_s
    run.train = {"epochs": args.epochs, "iters_per_epoch": args.iters, "val_iters_per_epoch": args.val_iters,
                 "iterations": iterations, "epoch_times_s": epochs, "train_s": train_s,
                 "train_s_source": ("sum of the logged epoch times" if logged
                                    else "whole command (epoch times not logged)"),
                 "s_per_iteration": train_s / iterations, "command_wall_s": m.wall_s, "cpu_s": m.cpu_s,
                 "peak_rss_bytes": m.peak_rss_bytes, "peak_pss_bytes": m.peak_pss_bytes,
                 "other_cpu_s": m.other_cpu_s, "contended": contended(m), "fold_folder": str(fold)}


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = DEFAULTS
    p.add_argument("--cases", type=int, default=d["cases"],
                   help=f"training cases of the brain-ms example ({d['cases']})")
    p.add_argument("--test-cases", type=int, default=d["test_cases"],
                   help=f"labelled test cases of the brain-ms example ({d['test_cases']})")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated dataset (0)")
    p.add_argument("--dataset-id", type=int, default=None,
                   help="use this raw dataset (nnU-Net v2 format, with imagesTs and labelsTs) instead of brain-ms; "
                        "needs --raw")
    p.add_argument("--raw", type=Path, default=None, help="raw root holding DatasetNNN_* (with --dataset-id)")
    p.add_argument("--epochs", type=int, default=d["epochs"], help=f"training epochs of both tools ({d['epochs']})")
    p.add_argument("--iters", type=int, default=d["iters"],
                   help=f"training iterations per epoch of both tools ({d['iters']})")
    p.add_argument("--val-iters", type=int, default=d["val_iters"],
                   help=f"validation iterations per epoch of both tools ({d['val_iters']})")
    p.add_argument("--gpu-memory-gb", type=float, default=d["gpu_memory_gb"],
                   help="GPU-memory target of both planners: nnU-Net's -gpu_memory_target, xtlunet's --gpu-memory-gb "
                        f"({d['gpu_memory_gb']:g}; both tools default to 8)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="training and prediction device (cpu)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch / BLAS threads of both tools (this machine's CPU count)")
    p.add_argument("--da-workers", type=int, default=None,
                   help="background augmentation processes of both trainers (nnUNet_n_proc_DA, XTLUNET_n_proc_DA); "
                        "default 0 (in the training process) on the CPU, min(8, CPUs - 2) on cuda")
    p.add_argument("-np", "--np", dest="np", type=int, default=2, help="workers of both planners (2)")
    p.add_argument("--only", choices=("both", "xtlunet", "nnunet"), default="both", help="which tools to run (both)")
    p.add_argument("--repeats", type=int, default=1,
                   help="trainings per tool on the same plan and split, alternating between the tools; the report "
                        "adds each tool's mean ± SD and Welch's t-test of the difference (1)")
    p.add_argument("--xtlunet-seed", type=int, default=12345,
                   help="seed of xtlunet's first training, + r for training r (12345, xtlunet's default); nnU-Net "
                        "does not seed its training")
    p.add_argument("--xtlunet-reorient", action="store_true",
                   help="plan xtlunet with --reorient (every case in its closest RAS+ frame), to measure that option")
    p.add_argument("--xtlunet-python", default=sys.executable,
                   help="interpreter of the xtlunet commands (this one); the scoring always uses this one's xtlunet")
    p.add_argument("--xtlunet-pythonpath", type=Path, default=None,
                   help="source checkout to run xtlunet from (put first on PYTHONPATH; its planners/ and trainers/ "
                        "are used as xtlunet.planners / xtlunet.trainers)")
    add_common_arguments(p, HERE / ".venv-nnunet", BUSY_FRACTION, None, wait_idle_s=60.0, timeout_s=7200.0)
    args = p.parse_args(argv)
    for name in ("cases", "test_cases", "epochs", "iters", "threads", "np", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.val_iters < 0:
        p.error("--val-iters must be at least 0")
    if (args.dataset_id is None) != (args.raw is None):
        p.error("--dataset-id and --raw go together")
    if args.gpu_memory_gb <= 0:
        p.error("--gpu-memory-gb must be positive")
    if args.da_workers is None:
        args.da_workers = 0 if args.device == "cpu" else min(8, max(1, (os.cpu_count() or 1) - 2))
    if args.xtlunet_pythonpath is not None:
        args.xtlunet_pythonpath = args.xtlunet_pythonpath.expanduser().absolute()
        if not (args.xtlunet_pythonpath / "xtlunet" / "__init__.py").is_file():
            p.error(f"--xtlunet-pythonpath {args.xtlunet_pythonpath} has no xtlunet/__init__.py")
    return args


def prepare_dataset(args: argparse.Namespace, work: Path) -> Dataset:
    """The brain-ms example written into WORK/raw, or the raw dataset of --dataset-id / --raw."""
    if args.dataset_id is not None:
        return find_dataset(args.raw.expanduser().absolute(), args.dataset_id, generated=False)
    raw = work / "raw"
    fresh(raw)
    make_dataset(raw, args.cases, args.seed, args.test_cases)
    return find_dataset(raw, DATASET_ID, generated=True)


def plan_tool(run: ToolRun, cmd: list[str], env: dict[str, str], out: Path, pre: Path, work: Path) -> None:
    """Plan and preprocess with one tool into fresh output folders; record the plan."""
    fresh(out / "preprocessed")
    fresh(out / "results")
    run.commands["plan"] = cmd
    run.seconds["plan"] = run_step(cmd, env, f"{run.tool} plan-and-preprocess", work)
    run.plan = p = read_plan(run.tool, pre)
    print(f"  {run.tool} plan-and-preprocess: {run.seconds['plan']:.0f} s; spacing {fmt_axes(p['spacing'], 3)}, "
          f"patch {fmt_axes(p['patch_size'])}, batch {p['batch_size']}, widths {p['widths']}", flush=True)


def benchmark(args: argparse.Namespace, tools: list[str], venv: Path, work: Path) -> dict[str, Any]:
    """Plan, train, predict and score each tool in `work`; print the report; return the results document."""
    start = time.perf_counter()
    data = prepare_dataset(args, work)
    outs = {t: work / ("nnunet" if t == NNUNET else "xtlunet") for t in TOOLS}
    pre = {t: outs[t] / "preprocessed" / data.name for t in TOOLS}
    envs = make_envs(args, data.raw, outs, venv)
    xt = xtlunet_prefix(args.xtlunet_python, args.xtlunet_pythonpath)
    runs: dict[str, ToolRun] = {}
    for tool in tools:
        origin = ({"version": package_version(venv_python(venv), "nnunetv2"), "venv": str(venv)} if tool == NNUNET
                  else xtlunet_origin(args.xtlunet_python, args.xtlunet_pythonpath, envs[XTLUNET]))
        runs[tool] = ToolRun(tool, origin)
        print(f"{tool}: " + ", ".join(f"{k} {v}" for k, v in origin.items()), flush=True)
    print(f"work folder {work}; dataset {data.folder} ({len(data.test_ids)} test cases)", flush=True)
    for tool in tools:
        plan_tool(runs[tool], plan_command(tool, args, data, xt, venv), envs[tool], outs[tool], pre[tool], work)
    split_note = None
    for r in range(args.repeats):   # alternating, so that a drift of the machine meets both tools alike
        for tool in tools:
            if tool == NNUNET and XTLUNET in tools and r == 0:   # xtlunet's first training wrote its split
                nn_conf = json.loads(Path(runs[NNUNET].plan["plans_file"]).read_text())["configurations"]
                split_note = align_splits(venv, pre, pre[NNUNET] / nn_conf[CONFIGURATION]["data_identifier"])
                print(f"  split: {split_note}", flush=True)
            seed = args.xtlunet_seed + r if tool == XTLUNET else None
            run = Training(r, seed)
            runs[tool].trainings.append(run)
            train_tool(tool, run, train_command(tool, args, data, xt, venv, seed),
                       train_env(envs[tool], args.da_workers), work, args, outs[tool] / "results", data)
            out_dir = work / "predictions" / ("nnunet" if tool == NNUNET else "xtlunet") / f"run_{r}"
            fresh(out_dir)
            run.commands["predict"] = cmd = predict_command(tool, args, data, xt, venv, out_dir)
            run.seconds["predict"] = run_tool_step(f"{tool} predict", cmd, envs[tool], work, args, timed=False).wall_s
            run.scores = score(out_dir, data)
            print(f"  {tool} pooled Dice {run.scores['pooled_dice']:.4f}", flush=True)
    stats = report(runs, data, args, split_note, (XTLUNET, NNUNET), CONFIGURATION, BUSY_FRACTION)
    total = time.perf_counter() - start
    print(f"total {total / 60:.1f} min (without the nnU-Net venv install)", flush=True)
    return {"dataset": data.name, "dataset_id": data.id, "generated": data.generated,
            "cases": args.cases if data.generated else None, "test_cases": data.test_ids,
            "configuration": CONFIGURATION, "gpu_memory_gb": args.gpu_memory_gb, "epochs": args.epochs,
            "iters_per_epoch": args.iters, "val_iters_per_epoch": args.val_iters, "device": args.device,
            "threads": args.threads, "da_workers": args.da_workers, "split": split_note, "total_s": total,
            "repeats": args.repeats, "statistics": stats,
            "machine": machine_info(), "tools": {t: asdict(r) for t, r in runs.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    """Make sure nnU-Net's venv and trainer exist, run the benchmark in the work folder, save the JSON."""
    args = parse_args(argv)
    tools = [t for t in TOOLS if args.only in ("both", "xtlunet" if t == XTLUNET else "nnunet")]
    venv = args.nnunet_venv.expanduser().absolute()
    install_s = ensure_nnunet_venv(venv, "torch==2.13.0", "nnunetv2") if NNUNET in tools else None
    trainer_file = install_nnunet_trainer(venv) if NNUNET in tools else None
    work = args.work.expanduser().absolute() if args.work else Path(tempfile.mkdtemp(prefix="xtlunet-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        doc = benchmark(args, tools, venv, work)
    finally:
        release_work(work, args.work, args.keep)
    if args.json:
        write_results(args.json, {**doc, "nnunet_install_s": install_s,
                                   "nnunet_trainer_file": str(trainer_file) if trainer_file else None})
    return 0


if __name__ == "__main__":
    sys.exit(main())

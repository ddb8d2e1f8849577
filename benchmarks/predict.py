"""Benchmark `xtlunet predict` against `nnUNetv2_predict` on the CPU, with and without test-time mirroring.

Sets up as train_step.py does (brain-ms example, both tools' 3d_fullres plans at the same target spacing, bench
plans with one patch and nnU-Net's topology and batch size), trains a barely-trained fold-0 model with each tool
(1 epoch of a few iterations: just weights of the right shape), then times both prediction commands on the
example's held-back imagesTs cases: wall time per case and peak memory of each command's whole process tree, best of
--repeats, tools alternating. Checks that the predictions have the input's geometry and reports their Dice against
labelsTs (both models are barely trained, so the Dice values only show that the outputs are sane).
`--xtlunet-options "OPTIONS"` (repeatable) times xtlunet once per set of extra predict options (e.g. --precision fp32,
--empty-windows run, --tta-axes 1 2), each as its own row, and reports how many label voxels each set changes
against the first. `--only xtlunet` needs no nnU-Net (no venv, no nnU-Net plan or model: xtlunet's own plan with
--patch, or `plan`); `--device cuda` trains and predicts xtlunet on the GPU (with --only xtlunet), e.g. with
--xtlunet-options sets of --precision bf16|fp32, --compile, --no-channels-last, --no-overlap.

The same file starts nnU-Net's training driver (`predict_models.py`): `--_driver nnunet-train SPEC_JSON` runs in
nU-Net's venv.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import add_common_arguments, parse_patch, release_work, run_measured, write_results  # noqa: E402
from plan_and_preprocess import (BUSY_FRACTION, CONFIGURATION, DATASET_ID, DATASET_NAME, NNUNET, XTLUNET,  # noqa: E402
                                 ensure_nnunet_venv, fresh, package_version, venv_python, wait_for_idle)
from predict_models import (NNUNET_TRAINER, XTLUNET_TRAINER, driver_nnunet_train, test_input,  # noqa: E402
                            train_models)
from train_step import DEFAULT_PATCH, Setup, contended, fmt_axes, prepare, threads_env  # noqa: E402

HERE = Path(__file__).resolve().parent
MB = 2 ** 20
MEMORY_NOTE = ("s/case = wall time of the whole command (interpreter start, imports, model loading, preprocessing, "
               "sliding window, export) / cases, best of the repeats; peak RSS = max over time of the RSS summed over "
               "the command and every process it started; peak PSS = the same with shared pages split between them")


# ---------------------------------------------------------------------------------------------------------------
# Timing and checking
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Runner:
    """One timed command line: nnU-Net's, or xtlunet's with extra predict options (one --xtlunet-options set)."""

    label: str
    tool: str
    extra: tuple[str, ...] = field(default=())

    @property
    def slug(self) -> str:
        """A folder name for its predictions."""
        return re.sub(r"[^A-Za-z0-9]+", "_", self.label).strip("_").lower()

    def runs(self, tta: bool) -> bool:
        """Whether it is timed in the TTA (or no-TTA) round: options choosing TTA axes make no sense without TTA."""
        return tta or "--tta-axes" not in self.extra


def make_runners(options: Sequence[str] | None, with_nnunet: bool = True) -> list[Runner]:
    """nnU-Net (when set up), then xtlunet once per --xtlunet-options string (once with its defaults when none is
    given)."""
    out = [Runner(NNUNET, NNUNET)] if with_nnunet else []
    for text in options or [""]:
        extra = tuple(shlex.split(text))
        out.append(Runner(" ".join([XTLUNET, *extra]), XTLUNET, extra))
    if len({r.label for r in out}) != len(out):
        sys.exit("--xtlunet-options: each set of options once")
    return out


def predict_command(setup: Setup, runner: Runner, in_dir: Path, out_dir: Path, tta: bool, step: float,
                    npp: int, device: str = "cpu") -> list[str]:
    """The prediction command of a runner (xtlunet's on `device`; nnU-Net's on the CPU)."""
    if runner.tool == NNUNET:
        cmd = [str(setup.venv / "bin" / "nnUNetv2_predict"), "-i", str(in_dir), "-o", str(out_dir),
               "-d", str(DATASET_ID), "-c", CONFIGURATION, "-f", "0", "-tr", NNUNET_TRAINER,
               "-p", setup.bench_plans[NNUNET], "-device", "cpu", "-step_size", f"{step:g}", "-npp", str(npp),
               "-nps", "1", "--disable_progress_bar"]
        return cmd + ([] if tta else ["--disable_tta"])
    cmd = [sys.executable, "-m", "xtlunet", "-q", "predict", "-i", str(in_dir), "-o", str(out_dir),
           "-d", str(DATASET_ID), "-c", CONFIGURATION, "-f", "0", "-tr", XTLUNET_TRAINER,
           "-p", setup.bench_plans[XTLUNET], "--device", device, "--step-size", f"{step:g}", "-npp", str(npp),
           *runner.extra]
    return cmd + ([] if tta else ["--no-tta"])


@dataclass
class PredictRun:
    """One measured prediction run."""

    tool: str
    tta: bool
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    peak_pss_bytes: int | None
    max_processes: int
    other_cpu_s: float
    contended: bool
    cases_written: int
    command: list[str]


@dataclass
class CaseCheck:
    """A prediction compared with its input and reference label."""

    case_id: str
    same_geometry: bool
    dice: float
    predicted_voxels: int
    reference_voxels: int


def dice(pred, ref) -> float:
    """Dice of the foreground (label > 0); 1.0 when both are empty."""
    import numpy as np

    p, r = pred > 0, ref > 0
    total = int(p.sum()) + int(r.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(p, r).sum()) / total


def check_predictions(out_dir: Path, in_dir: Path, labels: Path, ids: Sequence[str]) -> list[CaseCheck]:
    """Geometry (size, spacing, origin, direction) of each prediction vs its input image, and Dice vs its label."""
    import numpy as np
    import SimpleITK as sitk

    out = []
    for case in ids:
        pred_img = sitk.ReadImage(str(out_dir / f"{case}.nii.gz"))
        in_img = sitk.ReadImage(str(in_dir / f"{case}_0000.nii.gz"))
        ref_img = sitk.ReadImage(str(labels / f"{case}.nii.gz"))
        same = (pred_img.GetSize() == in_img.GetSize()
                and np.allclose(pred_img.GetSpacing(), in_img.GetSpacing(), rtol=1e-5, atol=1e-6)
                and np.allclose(pred_img.GetOrigin(), in_img.GetOrigin(), rtol=1e-5, atol=1e-4)
                and np.allclose(pred_img.GetDirection(), in_img.GetDirection(), atol=1e-5))
        pred, ref = sitk.GetArrayFromImage(pred_img), sitk.GetArrayFromImage(ref_img)
        d = dice(pred, ref) if pred.shape == ref.shape else float("nan")
        out.append(CaseCheck(case, bool(same), d, int((pred > 0).sum()), int((ref > 0).sum())))
    return out


def measure(setup: Setup, runner: Runner, tta: bool, in_dir: Path, ids: Sequence[str], args: argparse.Namespace,
            runs: list[PredictRun]) -> Path:
    """One measured prediction run into a fresh folder; exits with the output tail when it fails."""
    out_dir = setup.work / "predictions" / f"{runner.slug}_{'tta' if tta else 'notta'}"
    fresh(out_dir)
    cmd = predict_command(setup, runner, in_dir, out_dir, tta, args.step_size, args.npp, args.device)
    if args.wait_idle > 0:
        wait_for_idle(args.wait_idle)
    tool = runner.label
    m = run_measured(cmd, threads_env(setup.envs[runner.tool], args.threads), cwd=setup.work, timeout_s=args.timeout)
    written = len([c for c in ids if (out_dir / f"{c}.nii.gz").is_file()])
    if m.returncode != 0 or written != len(ids):
        sys.exit(f"{tool} prediction failed (exit {m.returncode}, {written}/{len(ids)} cases written): "
                 f"{' '.join(cmd)}\n{m.output_tail}")
    run = PredictRun(tool, tta, m.wall_s, m.cpu_s, m.peak_rss_bytes, m.peak_pss_bytes, m.max_processes,
                     m.other_cpu_s, contended(m), written, cmd)
    runs.append(run)
    print(f"  {tool:<{max(11, len(tool))}} {'TTA   ' if tta else 'no TTA'} {m.wall_s:7.2f} s "
          f"({m.wall_s / len(ids):6.2f} s/case), CPU {m.cpu_s:6.1f} s, peak RSS {m.peak_rss_bytes / MB:6.0f} MB, "
          f"peak PSS {(m.peak_pss_bytes or 0) / MB:6.0f} MB, {m.max_processes} processes"
          + (f"  [busy machine: other processes used {m.other_cpu_s:.1f} CPU-s]" if run.contended else ""), flush=True)
    return out_dir


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patch", nargs="+", default=[str(v) for v in DEFAULT_PATCH], metavar="N",
                   help="patch of both bench plans (3 sizes divisible by the total stride) or 'plan' for nnU-Net's "
                        f"planned patch (default {' '.join(map(str, DEFAULT_PATCH))})")
    p.add_argument("--repeats", type=int, default=2, help="measured runs per tool and TTA setting, alternating (2)")
    p.add_argument("--train-iters", type=int, default=2, help="training iterations of each tool's 1-epoch model (2)")
    p.add_argument("--copies", type=int, default=1,
                   help="predict this many renamed copies of each imagesTs case, to weigh per-case work more than "
                        "start-up (1)")
    p.add_argument("--step-size", type=float, default=0.5, help="sliding-window step of both tools (0.5)")
    p.add_argument("-npp", "--npp", dest="npp", type=int, default=1, help="-npp of both tools (1)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="OMP/MKL/OPENBLAS/NUMEXPR_NUM_THREADS of both commands (this machine's CPU count)")
    p.add_argument("--no-tta-only", action="store_true", help="skip the runs with test-time mirroring")
    p.add_argument("--xtlunet-options", action="append", default=None, metavar="OPTIONS",
                   help="extra options of xtlunet predict as one string, e.g. --xtlunet-options=\"--precision "
                        "fp32\"; repeat to time several sets, each its own row (default: xtlunet's defaults once); "
                        "a set with --tta-axes is timed with TTA only")
    p.add_argument("--cases", type=int, default=10, help="training cases of the brain-ms example (10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated dataset (0)")
    p.add_argument("-np", "--np", dest="np", type=int, default=2, help="workers of both planners (2)")
    p.add_argument("--no-match-spacing", dest="match_spacing", action="store_false",
                   help="let nnU-Net plan its own target spacing (then the tools slide over grids of different size)")
    p.add_argument("--gpu-memory-gb", type=float, default=8.0, help="xtlunet's --gpu-memory-gb for its plan (8)")
    p.add_argument("--only", choices=("both", "xtlunet"), default="both",
                   help="xtlunet: no nnU-Net at all (no venv, plan, model or runs), xtlunet's own plan (both)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="device of xtlunet's training and prediction (cpu); cuda needs --only xtlunet")
    add_common_arguments(p, HERE / ".venv-nnunet", BUSY_FRACTION, "WHAT")
    args = p.parse_args(argv)
    if args._driver is None:
        if args.device == "cuda" and args.only != "xtlunet":
            p.error("--device cuda needs --only xtlunet (nnU-Net predicts on the CPU here)")
        args.patch = parse_patch(p, args.patch)
        for name in ("repeats", "train_iters", "copies", "npp", "threads", "cases", "np"):
            if getattr(args, name) < 1:
                p.error(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 < args.step_size <= 1:
            p.error("--step-size must be in (0, 1]")
    return args


def label_agreement(dir_a: Path, dir_b: Path, ids: Sequence[str]) -> float:
    """Share of voxels, over the cases, where two prediction folders have the same label."""
    import SimpleITK as sitk

    same = total = 0
    for case in ids:
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(d / f"{case}.nii.gz"))) for d in (dir_a, dir_b))
        same, total = same + int((a == b).sum()), total + a.size
    return same / max(total, 1)


def report(setup: Setup, runs: list[PredictRun], checks: dict[tuple[str, bool], list[CaseCheck]], n_cases: int,
           windows: dict[str, Any], runners: Sequence[Runner],
           agreement: dict[tuple[str, bool], float], device: str = "cpu") -> dict[str, Any]:
    """Print the table, the ratios and the checks; return the summary for the JSON file."""
    w = max(11, *(len(r.label) for r in runners))
    head = (f"{'tool':<{w}} {'TTA':<4} {'s/case':>7} {'wall s':>7} {'CPU s':>7} {'peak RSS MB':>12} "
            f"{'peak PSS MB':>12} {'procs':>5} {'same geom':>9} {'Dice':>6}")
    print(f"\n{CONFIGURATION} prediction of {n_cases} cases on the {device.upper()}, patch {fmt_axes(setup.patch)}, "
          f"about {windows['per_case']} windows per case (the median case, step 0.5)")
    print(f"{head}\n{'-' * len(head)}")
    out: dict[str, Any] = {"results": {}}
    best: dict[tuple[str, bool], PredictRun] = {}
    for tta in (True, False):
        for tool in (r.label for r in runners):
            rs = [r for r in runs if r.tool == tool and r.tta == tta]
            if not rs:
                continue
            b = min(rs, key=lambda r: r.wall_s)
            best[(tool, tta)] = b
            cs = checks[(tool, tta)]
            mean_dice = statistics.fmean(c.dice for c in cs)
            geom = all(c.same_geometry for c in cs)
            peak_rss = max(r.peak_rss_bytes for r in rs)
            peak_pss = max(r.peak_pss_bytes or 0 for r in rs)
            print(f"{tool:<{w}} {'yes' if tta else 'no':<4} {b.wall_s / n_cases:>7.2f} {b.wall_s:>7.2f} "
                  f"{min(r.cpu_s for r in rs):>7.1f} {peak_rss / MB:>12.0f} {peak_pss / MB:>12.0f} "
                  f"{b.max_processes:>5} {'yes' if geom else 'NO':>9} {mean_dice:>6.3f}"
                  + ("  *" if b.contended else ""))
            out["results"][f"{tool}{'' if tta else ' no-TTA'}"] = {
                "tta": tta, "s_per_case": b.wall_s / n_cases, "best_wall_s": b.wall_s,
                "best_cpu_s": min(r.cpu_s for r in rs), "peak_rss_bytes": peak_rss, "peak_pss_bytes": peak_pss,
                "same_geometry": geom, "mean_dice": mean_dice, "cases": [asdict(c) for c in cs],
                "runs": [asdict(r) for r in rs], "label_agreement_with_first": agreement.get((tool, tta))}
    out["speed_ratio"] = {}
    ours = [r.label for r in runners if r.tool == XTLUNET]
    for tta in (True, False):
        for label in (x for x in ours if (NNUNET, tta) in best and (x, tta) in best):
            ratio = best[(NNUNET, tta)].wall_s / best[(label, tta)].wall_s
            rss = max(r.peak_rss_bytes for r in runs if r.tool == label and r.tta == tta) / max(
                r.peak_rss_bytes for r in runs if r.tool == NNUNET and r.tta == tta)
            key = ("tta" if tta else "no_tta") + ("" if label == XTLUNET else f" {label}")
            out["speed_ratio"][key] = ratio
            out.setdefault("peak_rss_ratio", {})[key] = rss
            same = agreement.get((label, tta))
            print(f"{label} / nnU-Net v2, {'with' if tta else 'without'} TTA: {ratio:.2f}x as fast "
                  f"(goal >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'}), peak RSS {rss:.2f}x"
                  + ("" if same is None else f"; labels equal to {ours[0]}'s in {100 * same:.3f} % of voxels"))
        for label in (x for x in ours[1:] if (NNUNET, tta) not in best and {(x, tta), (ours[0], tta)} <= set(best)):
            ratio = best[(ours[0], tta)].wall_s / best[(label, tta)].wall_s
            same = agreement.get((label, tta))
            print(f"{label} / {ours[0]}, {'with' if tta else 'without'} TTA: {ratio:.2f}x as fast"
                  + ("" if same is None else f"; labels equal in {100 * same:.3f} % of voxels"))
    print(f"({MEMORY_NOTE}; * = other processes used more than {BUSY_FRACTION:g} cores during that run)")
    print("Dice = mean foreground Dice vs labelsTs over the cases (barely trained models: a sanity check only); "
          "same geom = every prediction has its input's size, spacing, origin and direction")
    if setup.with_nnunet:
        matched = "matched" if setup.spacing_matched else "NOT matched: the tools slide over different grids"
        print(f"plans: target spacing nnU-Net {fmt_axes(setup.spacing[NNUNET])}, xtlunet "
              f"{fmt_axes(setup.spacing[XTLUNET])} ({matched}); patch {fmt_axes(setup.patch)}, "
              f"nnU-Net's topology (features {setup.arch['features_per_stage']}, strides {setup.arch['strides']}), "
              f"batch {setup.batch_size}")
    else:
        print(f"plan: xtlunet's own, target spacing {fmt_axes(setup.spacing[XTLUNET])}, patch {fmt_axes(setup.patch)} "
              f"(features {setup.arch['features_per_stage']}, strides {setup.arch['strides']}), batch "
              f"{setup.batch_size}")
    busy = [r for r in runs if r.contended]
    out["contended_runs"] = len(busy)
    if busy:
        best_busy = sorted({f"{t} {'TTA' if tta else 'no-TTA'}" for (t, tta), r in best.items() if r.contended})
        out["contended_best"] = best_busy
        print(f"note: other processes competed for the CPUs in {len(busy)} of {len(runs)} runs"
              + (f"; the best time of {', '.join(best_busy)} comes from such a run and is not reliable"
                 if best_busy else "; the best times shown come from undisturbed runs") + ".")
    return out


def windows_per_case(setup: Setup) -> dict[str, Any]:
    """Sliding windows per preprocessed test-sized case, from the median shape xtlunet planned."""
    import math

    plans = json.loads((setup.preprocessed(XTLUNET) / "xtlunetPlans.json").read_text())
    median = plans["configurations"][CONFIGURATION]["median_shape"]
    count = 1
    for size, patch in zip(median, setup.patch):
        span = max(int(size) - patch, 0)
        count *= math.ceil(span / (patch * 0.5)) + 1
    return {"median_shape": median, "per_case": count}


def main(argv: Sequence[str] | None = None) -> int:
    """Set up, train both models briefly, time both predictions with and without TTA, print and save."""
    args = parse_args(argv)
    if args._driver is not None:
        what, spec = args._driver
        if what != "nnunet-train":
            sys.exit(f"unknown driver {what}")
        driver_nnunet_train(json.loads(spec))
        return 0
    with_nnunet = args.only == "both"
    venv = args.nnunet_venv.expanduser().absolute()
    install_s = ensure_nnunet_venv(venv, "torch==2.13.0", "nnunetv2") if with_nnunet else None
    work = args.work.expanduser().absolute() if args.work else Path(tempfile.mkdtemp(prefix="xtlunet-predict-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"setting up in {work}: brain-ms example ({args.cases} cases), xtlunet"
              f"{' and nnU-Net' if with_nnunet else ''} plans ...", flush=True)
        setup = prepare(work, args.cases, args.seed, args.np, venv if with_nnunet else None, args.patch,
                        args.match_spacing, args.gpu_memory_gb, demo_plan=False)
        if not setup.spacing_matched:
            print("WARNING: the tools planned different target spacings; they predict different numbers of windows",
                  flush=True)
        start = time.perf_counter()
        train_s = train_models(setup, args.train_iters, args.threads, args.timeout, args.device)
        setup.setup_s.update({f"{t} training": s for t, s in train_s.items()})
        print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in setup.setup_s.items())
              + f" (training total {time.perf_counter() - start:.0f} s)", flush=True)
        in_dir, labels, ids = test_input(setup, args.copies)
        windows = windows_per_case(setup)
        runners = make_runners(args.xtlunet_options, with_nnunet)
        for r in runners:
            cmd = predict_command(setup, r, in_dir, Path("OUT"), True, args.step_size, args.npp, args.device)
            print(f"{r.label}: {' '.join(cmd)} [{'--disable_tta' if r.tool == NNUNET else '--no-tta'} without TTA]",
                  flush=True)
        runs: list[PredictRun] = []
        checks: dict[tuple[str, bool], list[CaseCheck]] = {}
        outs: dict[tuple[str, bool], Path] = {}
        for tta in ((False,) if args.no_tta_only else (True, False)):
            for _ in range(args.repeats):
                for r in (r for r in runners if r.runs(tta)):
                    outs[(r.label, tta)] = measure(setup, r, tta, in_dir, ids, args, runs)
                    checks[(r.label, tta)] = check_predictions(outs[(r.label, tta)], in_dir, labels, ids)
        first = next(r.label for r in runners if r.tool == XTLUNET)
        agreement = {(label, tta): label_agreement(outs[(first, tta)], out, ids) for (label, tta), out in outs.items()
                     if label not in (NNUNET, first) and (first, tta) in outs}
        summary = report(setup, runs, checks, len(ids), windows, runners, agreement, args.device)
        if args.json:
            doc = {"dataset": DATASET_NAME, "cases": args.cases, "test_cases": ids, "configuration": CONFIGURATION,
                   "patch": setup.patch, "batch_size": setup.batch_size, "architecture": setup.arch,
                   "spacing": setup.spacing, "spacing_matched": setup.spacing_matched,
                   "planned_patch": setup.planned_patch, "windows": windows, "step_size": args.step_size,
                   "npp": args.npp, "threads": args.threads, "repeats": args.repeats,
                   "train_iters": args.train_iters, "setup_s": setup.setup_s, "nnunet_install_s": install_s,
                   "device": args.device,
                   "versions": {**({NNUNET: package_version(venv_python(venv), "nnunetv2")} if with_nnunet else {}),
                                XTLUNET: package_version(sys.executable, "xtlunet")},
                   "commands": {r.label: predict_command(setup, r, in_dir, Path("OUT"), True, args.step_size, args.npp,
                                                         args.device) for r in runners},
                   "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                               "platform": platform.platform()}, **summary}
            write_results(args.json, doc)
    finally:
        release_work(work, args.work, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())

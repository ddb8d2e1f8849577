"""Benchmark one CPU training iteration of xtlunet against nnU-Net v2's nnUNetTrainer on the same plan.

Writes the brain-ms example, plans it with both tools for 3d_fullres (nnU-Net at xtlunet's target spacing unless
--no-match-spacing), takes nnU-Net's plan (topology, features, batch size) with the patch of --patch, and times
forward + loss + backward + optimiser step on a ready-made random batch (no data loading) in two single-process
drivers: nnU-Net's own trainer (initialize() + train_step(), in nnU-Net's venv) and xtlunet's network built from an
ArchitectureDescription with the same values, with xtlunet's loss, optimiser and step. xtlunet's own small demo plan
(--gpu-memory-gb 0.2) is timed too, for reference.

`--only xtlunet` needs no nnU-Net (no venv, no nnU-Net plan): xtlunet's own plan is timed, with --patch (or `plan`).
`--device cuda` times xtlunet's step on the GPU once per `--variant` (bf16 or fp32 autocast, channels-last layout,
torch.compile), e.g. `--only xtlunet --device cuda --patch plan`.

The same file starts the drivers (`train_step_drivers.py`): `--_driver nnunet|xtlunet SPEC_JSON` runs one timing inside
the measured process.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import add_common_arguments, parse_patch, release_work, write_results  # noqa: E402
from plan_and_preprocess import (BUSY_FRACTION, CONFIGURATION, DATASET_ID, DATASET_NAME, NNUNET,  # noqa: E402
                                 THREAD_VARS, XTLUNET, ensure_nnunet_venv, fresh, make_dataset, package_version,
                                 tool_env, venv_python)
from train_step_drivers import StepRun, contended, driver_nnunet, driver_xtlunet, run_driver  # noqa: E402,F401

HERE = Path(__file__).resolve().parent
MB = 2 ** 20
BENCH_SUFFIX = "_bench"          # plans written by this benchmark: nnUNetPlans_bench, xtlunetPlans_bench
DEMO_PLANS = "xtlunetPlans_demo"  # xtlunet's own plan for --gpu-memory-gb 0.2
DEMO_GPU_GB = 0.2
DEFAULT_PATCH = (32, 48, 48)
XTLUNET_DEMO = "xtlunet (own demo plan)"
VARIANT_TOKENS = ("bf16", "fp32", "cl", "compile")   # --variant: autocast dtype, channels-last, torch.compile
CUDA_VARIANTS = ("fp32", "bf16", "bf16+cl", "bf16+cl+compile")   # the default --variant set with --device cuda


# ---------------------------------------------------------------------------------------------------------------
# Set-up shared with predict.py: dataset, both tools' plans, the bench plans with one patch and topology
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Setup:
    """Where everything is, and the plans the two tools train/predict with."""

    work: Path
    raw: Path
    outs: dict[str, Path]
    envs: dict[str, dict[str, str]]
    venv: Path | None                 # None: xtlunet alone (no nnU-Net; its entries below repeat xtlunet's)
    nnunet_plans: str                 # nnU-Net's plans identifier as planned (nnUNetPlans)
    bench_plans: dict[str, str]       # tool -> plans name of the bench plans (same patch and topology)
    patch: list[int]
    batch_size: int
    arch: dict[str, Any]              # nnU-Net's arch_kwargs of 3d_fullres (the topology both build)
    spacing: dict[str, list[float]]   # tool -> 3d_fullres target spacing (transposed axis order)
    transpose: dict[str, list[int]]
    planned_patch: dict[str, list[int]]  # tool -> patch as each tool planned it
    num_classes: int
    in_channels: int
    setup_s: dict[str, float] = field(default_factory=dict)
    demo_arch: dict[str, Any] | None = None  # architecture of xtlunet's demo plan, when planned

    @property
    def with_nnunet(self) -> bool:
        """Whether nnU-Net was set up (planned, with its venv)."""
        return self.venv is not None

    def preprocessed(self, tool: str) -> Path:
        """The tool's preprocessed folder of the dataset."""
        return self.outs[tool] / "preprocessed" / DATASET_NAME

    @property
    def spacing_matched(self) -> bool:
        """Whether both tools resample to the same target spacing (0.1 %)."""
        a, b = self.spacing[NNUNET], self.spacing[XTLUNET]
        return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-3) for x, y in zip(a, b))


def threads_env(env: dict[str, str], threads: int) -> dict[str, str]:
    """`env` with every BLAS/OpenMP thread variable set to `threads`."""
    return {**env, **{var: str(threads) for var in THREAD_VARS}}


def run_step(cmd: Sequence[str], env: dict[str, str] | None, what: str, cwd: Path | None = None) -> float:
    """Run a set-up command; return its seconds, or exit with its output tail when it fails."""
    start = time.perf_counter()
    proc = subprocess.run(list(map(str, cmd)), env=env, cwd=cwd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-6000:]
        sys.exit(f"{what} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return time.perf_counter() - start


def raw_axis(values: Sequence[float], transpose_forward: Sequence[int]) -> list[float]:
    """Values given in a plan's transposed axis order, put back into the raw images' axis order."""
    out = [0.0] * len(values)
    for transposed_axis, raw_ax in enumerate(transpose_forward):
        out[raw_ax] = float(values[transposed_axis])
    return out


def check_patch(patch: Sequence[int], strides: Sequence[Sequence[int]]) -> None:
    """Exit when a patch is not divisible by the plan's total stride."""
    total = [math.prod(s[a] for s in strides) for a in range(len(patch))]
    if len(patch) != len(total) or any(p % t for p, t in zip(patch, total)):
        sys.exit(f"--patch {list(patch)} must be divisible by the plan's total stride {total} on every axis")


def prepare(work: Path, cases: int, seed: int, np_workers: int, venv: Path | None, patch: Sequence[int] | None,
            match_spacing: bool, gpu_memory_gb: float, demo_plan: bool) -> Setup:
    """Write the dataset; plan and preprocess with both tools; write the bench plans of both with one patch.

    xtlunet plans first; nnU-Net then plans with xtlunet's 3d_fullres spacing (-overwrite_target_spacing) when
    `match_spacing`. The bench plans copy nnU-Net's 3d_fullres (patch `patch`, or nnU-Net's own when None) for
    nnU-Net, and xtlunet's plans with that patch, batch size and topology for xtlunet; both keep their
    data_identifier, so the preprocessed data is reused. `venv` None: xtlunet alone (own_plan_setup).
    """
    raw = work / "raw"
    outs = {NNUNET: work / "nnunet", XTLUNET: work / "xtlunet"}
    if venv is None:
        del outs[NNUNET]
    envs = {t: tool_env(t, raw, outs[t], np_workers, None, venv) for t in outs}
    times: dict[str, float] = {}
    fresh(raw)
    times["dataset"] = make_dataset(raw, cases, seed)
    for t in outs:
        fresh(outs[t] / "preprocessed")
        fresh(outs[t] / "results")
    xt_cmd = [sys.executable, "-m", "xtlunet", "-q", "plan-and-preprocess", "-d", str(DATASET_ID), "-c",
              CONFIGURATION, "-np", str(np_workers), "--gpu-memory-gb", f"{gpu_memory_gb:g}"]
    times["xtlunet plan-and-preprocess"] = run_step(xt_cmd, envs[XTLUNET], "xtlunet plan-and-preprocess", work)
    xt_pre = outs[XTLUNET] / "preprocessed" / DATASET_NAME
    xt_plans = json.loads((xt_pre / "xtlunetPlans.json").read_text())
    xt_conf = xt_plans["configurations"][CONFIGURATION]
    if demo_plan:
        demo_cmd = [sys.executable, "-m", "xtlunet", "-q", "plan-and-preprocess", "-d", str(DATASET_ID), "-c",
                    CONFIGURATION, "--gpu-memory-gb", f"{DEMO_GPU_GB:g}", "--plans-name", DEMO_PLANS, "--no-pp"]
        times["xtlunet demo plan"] = run_step(demo_cmd, envs[XTLUNET], "xtlunet plan (demo)", work)
    if venv is None:
        return own_plan_setup(work, raw, outs, envs, patch, times)
    nn_cmd = [venv / "bin" / "nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", CONFIGURATION,
              "-np", str(np_workers), "-npfp", str(np_workers)]
    if match_spacing:
        nn_cmd += ["-overwrite_target_spacing",
                   *(repr(v) for v in raw_axis(xt_conf["spacing"], xt_plans["transpose_forward"]))]
    times["nnU-Net plan-and-preprocess"] = run_step(nn_cmd, envs[NNUNET], "nnUNetv2_plan_and_preprocess", work)

    nn_pre = outs[NNUNET] / "preprocessed" / DATASET_NAME
    nn_plans = json.loads((nn_pre / "nnUNetPlans.json").read_text())
    nn_conf = nn_plans["configurations"][CONFIGURATION]
    arch = nn_conf["architecture"]["arch_kwargs"]
    if not nn_conf["architecture"]["network_class_name"].endswith("PlainConvUNet"):
        sys.exit(f"nnU-Net planned {nn_conf['architecture']['network_class_name']}; this benchmark expects "
                 "PlainConvUNet")
    chosen = list(patch) if patch is not None else list(nn_conf["patch_size"])
    check_patch(chosen, arch["strides"])
    bench_nn = json.loads(json.dumps(nn_plans))
    bench_nn["plans_name"] = "nnUNetPlans" + BENCH_SUFFIX
    bench_nn["configurations"][CONFIGURATION]["patch_size"] = chosen
    (nn_pre / f"nnUNetPlans{BENCH_SUFFIX}.json").write_text(json.dumps(bench_nn, indent=2))

    from xtlunet.plans import Plans  # this interpreter has xtlunet

    plans = Plans.load(xt_pre / "xtlunetPlans.json")
    conf = plans.configurations[CONFIGURATION]
    conf.patch_size = chosen
    conf.batch_size = int(nn_conf["batch_size"])
    conf.architecture = xtlunet_architecture(arch, len(plans.channel_names))
    conf.notes = [*conf.notes, "benchmark: patch, batch size and topology copied from nnU-Net's 3d_fullres plan"]
    plans.plans_name = "xtlunetPlans" + BENCH_SUFFIX
    plans.save(xt_pre / f"{plans.plans_name}.json")
    dataset = json.loads((raw / DATASET_NAME / "dataset.json").read_text())
    return Setup(work, raw, outs, envs, venv, "nnUNetPlans",
                 {NNUNET: "nnUNetPlans" + BENCH_SUFFIX, XTLUNET: plans.plans_name}, chosen,
                 int(nn_conf["batch_size"]), arch,
                 {NNUNET: [float(v) for v in nn_conf["spacing"]], XTLUNET: [float(v) for v in xt_conf["spacing"]]},
                 {NNUNET: list(nn_plans["transpose_forward"]), XTLUNET: list(xt_plans["transpose_forward"])},
                 {NNUNET: list(nn_conf["patch_size"]), XTLUNET: list(xt_conf["patch_size"])},
                 len(set(dataset["labels"].values())), len(dataset["channel_names"]), times)


def own_plan_setup(work: Path, raw: Path, outs: dict[str, Path], envs: dict[str, dict[str, str]],
                   patch: Sequence[int] | None, times: dict[str, float]) -> Setup:
    """The set-up of xtlunet alone (no nnU-Net, e.g. on a GPU machine without it): the bench plans are xtlunet's own
    3d_fullres plan with the patch `patch` (None: as planned); nnU-Net's entries of the Setup repeat xtlunet's."""
    from xtlunet.plans import Plans

    pre = outs[XTLUNET] / "preprocessed" / DATASET_NAME
    plans = Plans.load(pre / "xtlunetPlans.json")
    conf = plans.configurations[CONFIGURATION]
    planned, arch = list(conf.patch_size), dict(conf.architecture)
    if patch is not None:
        check_patch(patch, arch["strides"])
        conf.patch_size = list(patch)
        conf.notes = [*conf.notes, "benchmark: patch changed"]
    plans.plans_name = "xtlunetPlans" + BENCH_SUFFIX
    plans.save(pre / f"{plans.plans_name}.json")
    dataset = json.loads((raw / DATASET_NAME / "dataset.json").read_text())
    spacing, transpose = [float(v) for v in conf.spacing], list(plans.transpose_forward)
    topology = {"features_per_stage": arch["widths"], "strides": arch["strides"], "kernel_sizes": arch["kernel_sizes"]}
    return Setup(work, raw, outs, envs, None, "", {XTLUNET: plans.plans_name}, list(conf.patch_size),
                 int(conf.batch_size), topology, {NNUNET: spacing, XTLUNET: spacing},
                 {NNUNET: transpose, XTLUNET: transpose}, {NNUNET: planned, XTLUNET: planned},
                 len(set(dataset["labels"].values())), len(dataset["channel_names"]), times)


def parse_variant(text: str) -> dict[str, Any]:
    """A --variant such as 'bf16+cl+compile' as driver options: precision, channels_last, compile."""
    tokens = [t for t in text.split("+") if t]
    unknown = [t for t in tokens if t not in VARIANT_TOKENS]
    if unknown or ("bf16" in tokens and "fp32" in tokens):
        raise ValueError(f"--variant {text!r}: give '+'-joined tokens of {', '.join(VARIANT_TOKENS)} (bf16 or fp32)")
    return {"precision": "fp32" if "fp32" in tokens else "bf16", "channels_last": "cl" in tokens,
            "compile": "compile" in tokens}


def xtlunet_architecture(arch: dict[str, Any], in_channels: int) -> dict[str, Any]:
    """xtlunet's ArchitectureDescription (as JSON) of nnU-Net's PlainConvUNet arch_kwargs."""
    norm = arch.get("norm_op", "")
    if "InstanceNorm" not in str(norm) or not arch.get("conv_bias", True):
        sys.exit(f"nnU-Net planned norm {norm} / conv_bias {arch.get('conv_bias')}; expected instance norm with bias")
    n = int(arch["n_stages"])
    return {"family": "plain", "dim": len(arch["kernel_sizes"][0]), "in_channels": in_channels,
            "widths": [int(v) for v in arch["features_per_stage"]][:n],
            "strides": [[int(v) for v in s] for s in arch["strides"]],
            "kernel_sizes": [[int(v) for v in k] for k in arch["kernel_sizes"]],
            "blocks": [int(v) for v in arch["n_conv_per_stage"]],
            "norm": "instance", "decoder_blocks": [int(v) for v in arch["n_conv_per_stage_decoder"]],
            "deep_supervision": True}


def fmt_axes(values: Sequence[float], digits: int = 4) -> str:
    """Axis values joined by 'x'."""
    return "x".join(f"{v:.{digits}g}" for v in values)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patch", nargs="+", default=[str(v) for v in DEFAULT_PATCH], metavar="N",
                   help="patch (3 sizes, divisible by the plan's total stride), or 'plan' for nnU-Net's planned "
                        f"patch (default {' '.join(map(str, DEFAULT_PATCH))})")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per run (5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first (2)")
    p.add_argument("--repeats", type=int, default=3,
                   help="driver runs per tool, alternating (3); s/it pools their undisturbed iterations")
    p.add_argument("--threads", type=int, default=2, help="torch / BLAS threads of each driver (2)")
    p.add_argument("--cases", type=int, default=10, help="training cases of the brain-ms example (10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset and of the random batch (0)")
    p.add_argument("-np", "--np", dest="np", type=int, default=2, help="workers of both planners (2)")
    p.add_argument("--no-match-spacing", dest="match_spacing", action="store_false",
                   help="let nnU-Net plan its own target spacing (default: xtlunet's, via -overwrite_target_spacing)")
    p.add_argument("--gpu-memory-gb", type=float, default=8.0, help="xtlunet's --gpu-memory-gb for its plan (8)")
    p.add_argument("--no-demo", dest="demo", action="store_false",
                   help=f"skip timing xtlunet on its own --gpu-memory-gb {DEMO_GPU_GB:g} plan")
    p.add_argument("--only", choices=("both", "nnunet", "xtlunet"), default="both", help="which tools to time (both)")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's table of xtlunet's timed steps")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of xtlunet's step (cpu); cuda "
                   "needs --only xtlunet (nnU-Net's driver runs on the CPU)")
    p.add_argument("--variant", action="append", default=None, metavar="TOKENS",
                   help="time xtlunet once per variant: '+'-joined tokens of bf16|fp32 (autocast on CUDA), cl "
                        "(channels-last layout), compile (torch.compile); repeatable (default: the plain step on the "
                        f"CPU, {' '.join(CUDA_VARIANTS)} on CUDA)")
    add_common_arguments(p, HERE / ".venv-nnunet", BUSY_FRACTION, "TOOL")
    args = p.parse_args(argv)
    if args._driver is None:
        if args.device == "cuda" and args.only != "xtlunet":
            p.error("--device cuda needs --only xtlunet")
        args.variant = args.variant or (list(CUDA_VARIANTS) if args.device == "cuda" else [""])
        for v in args.variant:
            try:
                parse_variant(v)
            except ValueError as exc:
                p.error(str(exc))
        args.patch = parse_patch(p, args.patch)
        for name in ("iters", "repeats", "threads", "cases", "np"):
            if getattr(args, name) < 1:
                p.error(f"--{name} must be at least 1")
        if args.warmup < 0:
            p.error("--warmup must be at least 0")
    return args


def report(setup: Setup, runs: dict[str, list[StepRun]], args: argparse.Namespace) -> dict[str, Any]:
    """Print the table and the ratio; return the summary for the JSON file."""
    print(f"\n{CONFIGURATION} training step on the {args.device.upper()} ({args.threads} threads, {args.iters} timed "
          f"iterations after {args.warmup} warm-up, data loading excluded; forward + deep-supervised Dice+CE + "
          "backward + clip + SGD)")
    head = (f"{'tool':<26} {'patch':<10} {'batch':>5} {'params':>9} {'s/it':>8} {'min s':>7} {'clean':>7} "
            f"{'peak RSS MB':>12} {'peak PSS MB':>12}")
    print(f"{head}\n{'-' * len(head)}")
    first: dict[str, StepRun] = {}  # parameters, patch and batch are the same in every run
    pooled: dict[str, dict[str, Any]] = {}
    for label, rs in runs.items():
        b = first[label] = rs[0]
        every = [t for r in rs for t in r.times]
        clean = [t for r in rs for t in r.clean_times]
        pooled[label] = {"s_per_iter": statistics.median(clean or every), "min_s": min(every),
                         "clean_iterations": len(clean), "iterations": len(every),
                         "peak_rss_bytes": max(r.peak_rss_bytes for r in rs),
                         "peak_pss_bytes": max(r.peak_pss_bytes or 0 for r in rs), "parameters": b.parameters,
                         "patch": b.patch, "batch": b.batch}
        p = pooled[label]
        p["run_medians"] = [r.median_s for r in rs]
        print(f"{label:<26} {fmt_axes(b.patch):<10} {b.batch:>5} {b.parameters / 1e6:>8.2f}M {p['s_per_iter']:>8.3f} "
              f"{p['min_s']:>7.3f} {len(clean):>3}/{len(every):<3} {p['peak_rss_bytes'] / MB:>12.0f} "
              f"{p['peak_pss_bytes'] / MB:>12.0f}" + ("" if clean else "  *"))
    out: dict[str, Any] = {"tools": pooled, "runs": {k: [asdict(r) for r in rs] for k, rs in runs.items()}}
    if any(len(rs) > 1 for rs in runs.values()):
        print("run-to-run spread (median s/it of each run): " + "; ".join(
            f"{label} {', '.join(f'{v:.3f}' for v in p['run_medians'])}" for label, p in pooled.items()))
    if NNUNET in first and XTLUNET in first:
        theirs, ours = first[NNUNET], first[XTLUNET]
        out["speed_ratio"] = pooled[NNUNET]["s_per_iter"] / pooled[XTLUNET]["s_per_iter"]
        out["speed_ratio_min"] = pooled[NNUNET]["min_s"] / pooled[XTLUNET]["min_s"]
        out["peak_rss_ratio"] = max(r.peak_rss_bytes for r in runs[XTLUNET]) / max(
            r.peak_rss_bytes for r in runs[NNUNET])
        print(f"\nxtlunet / nnU-Net v2: {out['speed_ratio']:.2f}x the iterations per second "
              f"(nnU-Net s/it ÷ xtlunet s/it; {out['speed_ratio_min']:.2f}x by the fastest iterations), "
              f"peak RSS {out['peak_rss_ratio']:.2f}x")
        same = theirs.parameters == ours.parameters
        out["same_parameter_count"] = same
        print(f"same topology check: {theirs.parameters:,} vs {ours.parameters:,} parameters "
              f"({'equal' if same else 'DIFFERENT'}); deep-supervision outputs {theirs.outputs} vs {ours.outputs}")
    print(f"(s/it = median over the undisturbed timed iterations of every run (other processes used at most "
          f"{BUSY_FRACTION:g} cores meanwhile; clean = how many were), * = none was, so the median is over all of "
          "them and not reliable; min s = the fastest iteration; peak RSS/PSS = the whole driver process: "
          "interpreter, torch, network, optimiser state, activations)")
    if not setup.with_nnunet:
        print(f"\nplan: xtlunet's own 3d_fullres, spacing {fmt_axes(setup.spacing[XTLUNET])}, planned patch "
              f"{fmt_axes(setup.planned_patch[XTLUNET])}, timed patch {fmt_axes(setup.patch)} (features "
              f"{setup.arch['features_per_stage']}, strides {setup.arch['strides']}, batch {setup.batch_size})")
    else:
        print(f"\nplans: xtlunet spacing {fmt_axes(setup.spacing[XTLUNET])}, nnU-Net spacing "
              f"{fmt_axes(setup.spacing[NNUNET])} ({'matched' if setup.spacing_matched else 'NOT matched'}); "
              f"planned patch nnU-Net {fmt_axes(setup.planned_patch[NNUNET])}, xtlunet "
              f"{fmt_axes(setup.planned_patch[XTLUNET])}; timed patch {fmt_axes(setup.patch)} with nnU-Net's topology "
              f"(features {setup.arch['features_per_stage']}, strides {setup.arch['strides']}, kernels "
              f"{setup.arch['kernel_sizes']}, batch {setup.batch_size})")
    if XTLUNET_DEMO in first:
        demo = setup.demo_arch or {}
        print(f"{XTLUNET_DEMO}: xtlunet's 3d_fullres plan for --gpu-memory-gb {DEMO_GPU_GB:g} (patch "
              f"{fmt_axes(first[XTLUNET_DEMO].patch)}, batch {first[XTLUNET_DEMO].batch}, widths {demo.get('widths')}, "
              f"strides {demo.get('strides')}), for reference; not comparable with the rows above")
    busy = [r for rs in runs.values() for r in rs if r.contended]
    out["contended_runs"] = len(busy)
    disturbed = sum(len(r.times) - len(r.clean_times) for rs in runs.values() for r in rs)
    out["disturbed_iterations"] = disturbed
    if busy or disturbed:
        total = sum(len(r.times) for rs in runs.values() for r in rs)
        few = [label for label, p in pooled.items() if p["clean_iterations"] < p["iterations"] / 2]
        print(f"note: other processes competed for the CPUs in {len(busy)} of "
              f"{sum(len(rs) for rs in runs.values())} driver runs and in {disturbed} of {total} timed iterations "
              "(left out of s/it)" + (f"; fewer than half of the iterations of {', '.join(few)} were undisturbed: "
                                      "rerun with a larger --wait-idle or more --repeats for numbers to quote"
                                      if few else "") + ".")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Set up, time both trainers' steps (and xtlunet's on its demo plan), print and optionally save."""
    args = parse_args(argv)
    if args._driver is not None:
        tool, spec = args._driver
        (driver_nnunet if tool == "nnunet" else driver_xtlunet)(json.loads(spec))
        return 0
    with_nnunet = args.only != "xtlunet"
    venv = args.nnunet_venv.expanduser().absolute()
    install_s = ensure_nnunet_venv(venv, "torch==2.13.0", "nnunetv2") if with_nnunet else None
    work = args.work.expanduser().absolute() if args.work else Path(tempfile.mkdtemp(prefix="xtlunet-trainstep-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"setting up in {work}: brain-ms example ({args.cases} cases), xtlunet"
              f"{' and nnU-Net' if with_nnunet else ''} plans ...", flush=True)
        setup = prepare(work, args.cases, args.seed, args.np, venv if with_nnunet else None, args.patch,
                        args.match_spacing, args.gpu_memory_gb, args.demo)
        print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in setup.setup_s.items()), flush=True)
        common = {"iters": args.iters, "warmup": args.warmup, "threads": args.threads, "seed": args.seed}
        plans = {}
        from xtlunet.plans import Plans

        bench_file = setup.preprocessed(XTLUNET) / f"{setup.bench_plans[XTLUNET]}.json"
        plans[XTLUNET] = {**common, "plans_file": str(bench_file), "profile": args.profile, "device": args.device}
        jobs: list[tuple[str, Path | str, str, dict[str, Any], dict[str, str]]] = []
        if args.only in ("both", "nnunet"):
            plans[NNUNET] = {**common, "plans": setup.bench_plans[NNUNET]}
            jobs.append((NNUNET, venv_python(venv), "nnunet", plans[NNUNET], threads_env(setup.envs[NNUNET],
                                                                                         args.threads)))
        if args.only in ("both", "xtlunet"):
            for variant in args.variant:   # "" on the CPU by default: the plain step, labelled "xtlunet"
                jobs.append((f"{XTLUNET} {variant}".strip(), sys.executable, "xtlunet",
                             {**plans[XTLUNET], **parse_variant(variant)}, threads_env(setup.envs[XTLUNET],
                                                                                       args.threads)))
        if args.demo and args.only in ("both", "xtlunet"):
            demo = Plans.load(setup.preprocessed(XTLUNET) / f"{DEMO_PLANS}.json").configurations[CONFIGURATION]
            setup.demo_arch = demo.architecture
            jobs.append((XTLUNET_DEMO, sys.executable, "xtlunet",
                         {**common, "plans_file": str(setup.preprocessed(XTLUNET) / f"{DEMO_PLANS}.json"),
                          "device": args.device, **parse_variant(args.variant[0])},
                         threads_env(setup.envs[XTLUNET], args.threads)))
        runs: dict[str, list[StepRun]] = {label: [] for label, *_ in jobs}
        for _ in range(args.repeats):
            for label, python, tool, spec, env in jobs:
                runs[label].append(run_driver(label, python, tool, spec, env, work, args.timeout, args.wait_idle))
        summary = report(setup, runs, args)
        if args.json:
            doc = {"dataset": DATASET_NAME, "cases": args.cases, "configuration": CONFIGURATION,
                   "patch": setup.patch, "batch_size": setup.batch_size, "architecture": setup.arch,
                   "spacing": setup.spacing, "spacing_matched": setup.spacing_matched,
                   "planned_patch": setup.planned_patch, "iters": args.iters, "warmup": args.warmup,
                   "threads": args.threads, "repeats": args.repeats, "setup_s": setup.setup_s,
                   "nnunet_install_s": install_s, "device": args.device, "variants": args.variant,
                   "versions": {**({NNUNET: package_version(venv_python(venv), "nnunetv2")} if with_nnunet else {}),
                                XTLUNET: package_version(sys.executable, "xtlunet")},
                   "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                               "platform": platform.platform()}, **summary}
            write_results(args.json, doc)
    finally:
        release_work(work, args.work, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark `xtlunet plan-and-preprocess` against nnU-Net v2's `nnUNetv2_plan_and_preprocess` on one dataset.

Writes the built-in brain-ms example (nnU-Net v2 raw format, Dataset501_BrainMS), runs both tools on it with
the same configuration and worker count, and prints wall time, cases/s and peak memory (summed over each
command's whole process tree), their ratios, and the target spacing and median shape each tool planned.
nnU-Net v2 runs from its own virtual environment, created on first use.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import machine_busy_cpu_s, release_work, run_measured, write_results  # noqa: E402

HERE = Path(__file__).resolve().parent
DATASET_ID = 501
DATASET_NAME = "Dataset501_BrainMS"
CONFIGURATION = "3d_fullres"
TORCH_SPEC = "torch==2.13.0"
NNUNET_SPEC = "nnunetv2"
NNUNET = "nnU-Net v2"
XTLUNET = "xtlunet"
ROOT_VARS = {NNUNET: ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"),
             XTLUNET: ("XTLUNET_raw", "XTLUNET_preprocessed", "XTLUNET_results")}
DATA_ROOT_VARS = {var for roots in ROOT_VARS.values() for var in roots}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
MB = 2 ** 20
FAIRNESS_NOTE = ("nnU-Net v2 plans with its default planner and GPU-memory target, "
                 "xtlunet with --gpu-memory-gb {gb:g}; "
                 "patch and batch sizes may differ, but preprocessing cost is dominated by resampling every case to "
                 "the target spacing, which does not depend on the patch size.")
SPACING_WARNING = ("WARNING: the tools planned different target spacings, so they resampled to grids of different "
                   "size (the median case has {ratio:.2f}x as many voxels in xtlunet's plan as in nnU-Net's) and did "
                   "different amounts of work; rerun with --match-spacing to give nnU-Net xtlunet's spacing "
                   "(-overwrite_target_spacing) for a like-for-like timing.")
BUSY_FRACTION = 0.1  # a run is "contended" when other processes used more than this many cores on average
MEMORY_NOTE = ("wall = whole command, best of the repeats; CPU = user + system time of the command and its "
               "workers (least over the repeats; less sensitive than wall time to other load); peak RSS = max over "
               "time of the RSS summed over the command and all its workers (pages shared between processes, e.g. "
               "by forked workers, count once per process); peak PSS = the same with shared pages split between "
               "the processes that share them.")


@dataclass
class ToolRun:
    """One measured run of one tool."""

    wall_s: float
    peak_rss_bytes: int
    peak_pss_bytes: int | None
    max_processes: int
    cpu_s: float
    other_cpu_s: float
    cases_written: int
    command: list[str]

    @property
    def contended(self) -> bool:
        """Whether other processes on the machine used a noticeable share of the CPUs during this run."""
        return self.other_cpu_s > BUSY_FRACTION * self.wall_s


@dataclass
class PlanSummary:
    """What a tool planned for 3d_fullres (axes in the tool's transposed order, coarse axis first)."""

    spacing: list[float]
    median_shape: list[float]
    patch_size: list[int]
    batch_size: int
    transpose_forward: list[int]


@dataclass
class ToolResult:
    """All runs of one tool, its version and the plans it wrote."""

    tool: str
    version: str
    runs: list[ToolRun] = field(default_factory=list)
    plans: PlanSummary | None = None

    @property
    def best_wall_s(self) -> float:
        """The best (shortest) wall time over the runs."""
        return min(r.wall_s for r in self.runs)

    @property
    def best_cpu_s(self) -> float:
        """The least CPU time (command and workers) over the runs."""
        return min(r.cpu_s for r in self.runs)

    @property
    def peak_rss_bytes(self) -> int:
        """The largest peak summed RSS over the runs."""
        return max(r.peak_rss_bytes for r in self.runs)

    @property
    def peak_pss_bytes(self) -> int:
        """The largest peak summed PSS over the runs (0 when not measured)."""
        return max(r.peak_pss_bytes or 0 for r in self.runs)

    def to_json(self, cases: int) -> dict[str, Any]:
        """A JSON-ready summary with every run."""
        return {"version": self.version, "command": self.runs[-1].command, "best_wall_s": self.best_wall_s,
                "best_cpu_s": self.best_cpu_s,
                "cases_per_s": cases / self.best_wall_s, "peak_rss_bytes": self.peak_rss_bytes,
                "peak_pss_bytes": self.peak_pss_bytes, "runs": [asdict(r) for r in self.runs],
                "plans": asdict(self.plans) if self.plans else None}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=20, help="training cases in the generated brain-ms dataset (20)")
    p.add_argument("-np", "--np", dest="np", type=int, default=2, help="worker processes for both tools (2)")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per tool, alternating; the best wall time is reported (1)")
    p.add_argument("--work", type=Path, default=None,
                   help="work folder for the raw data and each tool's outputs (kept); default: a temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    p.add_argument("--nnunet-venv", type=Path, default=HERE / ".venv-nnunet",
                   help="virtual environment with nnU-Net v2, created and installed when missing "
                        "(benchmarks/.venv-nnunet)")
    p.add_argument("--nnunet-spec", default=NNUNET_SPEC, help=f"pip requirement for nnU-Net v2 ({NNUNET_SPEC})")
    p.add_argument("--torch-spec", default=TORCH_SPEC,
                   help=f"pip requirement for torch in that venv, installed first and kept ({TORCH_SPEC})")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the full dataset check (drop --verify_dataset_integrity / --verify)")
    p.add_argument("--match-spacing", action="store_true",
                   help="run xtlunet first and give nnU-Net its 3d_fullres target spacing (-overwrite_target_spacing)")
    p.add_argument("--gpu-memory-gb", type=float, default=8.0, help="xtlunet's --gpu-memory-gb (8)")
    p.add_argument("--threads", type=int, default=None,
                   help="set OMP/MKL/OPENBLAS/NUMEXPR_NUM_THREADS for both tools; default: inherit")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated dataset (0)")
    p.add_argument("--only", choices=("both", "nnunet", "xtlunet"), default="both", help="which tools to run (both)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each run, wait up to this long for the machine to be idle (other processes using "
                        f"< {BUSY_FRACTION:g} cores over 2 s); default: do not wait")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before a tool run is killed (3600)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    for name in ("cases", "np", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.match_spacing and args.only != "both":
        p.error("--match-spacing needs both tools")
    return args


def run_checked(cmd: Sequence[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a set-up command; exit with a message when it fails."""
    proc = subprocess.run(list(cmd), **kwargs)
    if proc.returncode != 0:
        sys.exit(f"{what} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}")
    return proc


def venv_python(venv: Path) -> Path:
    """The python of a virtual environment."""
    return venv / "bin" / "python"


def ensure_nnunet_venv(venv: Path, torch_spec: str, nnunet_spec: str) -> float | None:
    """Create `venv` with torch then nnU-Net v2 unless it already has nnU-Net; return install seconds or None."""
    if (venv / "bin" / "nnUNetv2_plan_and_preprocess").is_file():
        return None
    print(f"installing nnU-Net v2 into {venv} ({torch_spec} first, then {nnunet_spec}) ...", flush=True)
    start = time.perf_counter()
    run_checked([sys.executable, "-m", "venv", str(venv)], "creating the nnU-Net venv")
    pip = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check"]
    run_checked([*pip, torch_spec], f"pip install {torch_spec}")
    torch_s = time.perf_counter() - start
    # torch again in the same request: else the newest torchvision (via timm) pulls in a newer, CUDA, torch
    run_checked([*pip, nnunet_spec, torch_spec], f"pip install {nnunet_spec} {torch_spec}")
    elapsed = time.perf_counter() - start
    print(f"installed nnU-Net v2 in {elapsed:.0f} s (venv + torch {torch_s:.0f} s, nnunetv2 {elapsed - torch_s:.0f} s)",
          flush=True)
    return elapsed


def package_version(python: str | Path, package: str) -> str:
    """The installed version of `package` in the environment of `python`."""
    proc = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "?"


def base_env(threads: int | None) -> dict[str, str]:
    """The environment both tools start from: ours, without data roots or python path overrides."""
    drop = DATA_ROOT_VARS | {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    if threads is not None:
        env.update({var: str(threads) for var in THREAD_VARS})
    return env


def tool_env(tool: str, raw: Path, out: Path, np: int, threads: int | None, venv: Path) -> dict[str, str]:
    """The environment of one tool: its three data roots, and for nnU-Net its venv first on PATH."""
    env = base_env(threads)
    raw_var, pp_var, res_var = ROOT_VARS[tool]
    env.update({raw_var: str(raw), pp_var: str(out / "preprocessed"), res_var: str(out / "results")})
    if tool == NNUNET:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
        env["nnUNet_def_n_proc"] = str(np)  # worker count of any nnU-Net step without an -np option of its own
    return env


def nnunet_command(venv: Path, np: int, verify: bool, spacing: Sequence[float] | None = None) -> list[str]:
    """nnU-Net v2's command; `spacing` (raw axis order) overrides its 3d_fullres target spacing."""
    cmd = [str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", CONFIGURATION,
           "-np", str(np), "-npfp", str(np)]
    if spacing is not None:
        cmd += ["-overwrite_target_spacing", *(repr(float(s)) for s in spacing)]
    return cmd + (["--verify_dataset_integrity"] if verify else [])


def xtlunet_command(np: int, verify: bool, gpu_memory_gb: float) -> list[str]:
    """xtlunet's command, run with this interpreter."""
    cmd = [sys.executable, "-m", "xtlunet", "plan-and-preprocess", "-d", str(DATASET_ID), "-c", CONFIGURATION,
           "-np", str(np), "--gpu-memory-gb", f"{gpu_memory_gb:g}"]
    return cmd + (["--verify"] if verify else [])


def make_dataset(raw: Path, cases: int, seed: int, test_cases: int | None = None) -> float:
    """Write the brain-ms example into `raw` with xtlunet's own command; return the seconds it took."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "xtlunet", "-q", "example", "brain-ms", "--out", str(raw), "--cases", str(cases),
           "--seed", str(seed), *(["--test-cases", str(test_cases)] if test_cases else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"writing the brain-ms example failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                 f"{proc.stderr[-4000:]}")
    if not (raw / DATASET_NAME / "dataset.json").is_file():
        sys.exit(f"xtlunet example did not write {raw / DATASET_NAME}")
    return time.perf_counter() - start


def fresh(folder: Path) -> None:
    """Remove and recreate a folder."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def read_plans(tool: str, preprocessed: Path) -> tuple[PlanSummary, Path]:
    """The 3d_fullres plan a tool wrote, and the folder of its preprocessed cases."""
    folder = preprocessed / DATASET_NAME
    if tool == NNUNET:
        name, shape_key = "nnUNetPlans", "median_image_size_in_voxels"
    else:
        name, shape_key = "xtlunetPlans", "median_shape"
    plans = json.loads((folder / f"{name}.json").read_text())
    conf = plans["configurations"][CONFIGURATION]
    summary = PlanSummary([float(v) for v in conf["spacing"]], [float(v) for v in conf[shape_key]],
                          list(conf["patch_size"]), int(conf["batch_size"]), list(plans["transpose_forward"]))
    return summary, folder / conf["data_identifier"]


def raw_axis_spacing(plan: PlanSummary) -> list[float]:
    """A plan's target spacing put back into the raw images' axis order (undoing transpose_forward)."""
    raw = [0.0] * len(plan.spacing)
    for transposed_axis, raw_axis in enumerate(plan.transpose_forward):
        raw[raw_axis] = plan.spacing[transposed_axis]
    return raw


def count_cases(tool: str, data_folder: Path) -> int:
    """Number of cases a tool wrote (nnU-Net: one .pkl per case; xtlunet: one .json per case)."""
    if not data_folder.is_dir():
        return 0
    if tool == NNUNET:
        return len(list(data_folder.glob("*.pkl")))
    return len([f for f in data_folder.glob("*.json") if f.name != "configuration.json"])


def wait_for_idle(max_wait_s: float, window_s: float = 2.0) -> float:
    """Wait (at most `max_wait_s`) until the machine's busy CPU over `window_s` is below BUSY_FRACTION cores."""
    start = time.perf_counter()
    while True:
        before = machine_busy_cpu_s()
        time.sleep(window_s)
        busy = (machine_busy_cpu_s() - before) / window_s
        waited = time.perf_counter() - start
        if busy < BUSY_FRACTION or waited >= max_wait_s:
            if waited > window_s + 0.5:
                state = "idle" if busy < BUSY_FRACTION else f"still busy ({busy:.2f} cores)"
                print(f"  waited {waited:.0f} s for an idle machine: {state}", flush=True)
            return waited


def measure_tool(result: ToolResult, command: list[str], env: dict[str, str], out: Path, cases: int, cwd: Path,
                 timeout_s: float) -> ToolRun:
    """Run one tool once on fresh output folders; record the run and the plans it wrote."""
    fresh(out / "preprocessed")
    fresh(out / "results")
    m = run_measured(command, env, cwd=cwd, timeout_s=timeout_s)
    if m.returncode != 0:
        print(f"\n{result.tool} failed (exit {m.returncode}): {' '.join(command)}\nlast output:\n{m.output_tail}",
              file=sys.stderr)
        sys.exit(1)
    plans, data_folder = read_plans(result.tool, out / "preprocessed")
    run = ToolRun(m.wall_s, m.peak_rss_bytes, m.peak_pss_bytes, m.max_processes, m.cpu_s, m.other_cpu_s,
                  count_cases(result.tool, data_folder), command)
    if run.cases_written != cases:
        print(f"warning: {result.tool} wrote {run.cases_written} preprocessed cases, expected {cases}", file=sys.stderr)
    result.runs.append(run)
    result.plans = plans
    print(f"  {result.tool:<11} run {len(result.runs)}: {run.wall_s:7.2f} s, "
          f"peak RSS {run.peak_rss_bytes / MB:6.0f} MB, "
          f"peak PSS {(run.peak_pss_bytes or 0) / MB:6.0f} MB, CPU {run.cpu_s:6.1f} s, {run.max_processes} processes, "
          f"{run.cases_written} cases written" + (f"  [busy machine: other processes used {run.other_cpu_s:.1f} CPU-s]"
                                                  if run.contended else ""), flush=True)
    return run


def fmt_axes(values: Sequence[float], digits: int = 4) -> str:
    """Axis values joined by 'x'."""
    return " x ".join(f"{v:.{digits}g}" for v in values)


def plans_agree(a: PlanSummary, b: PlanSummary) -> dict[str, bool]:
    """Whether two plans agree on target spacing (to 0.1 %) and median shape (to half a voxel: nnU-Net keeps .5s)."""
    same_dim = len(a.spacing) == len(b.spacing) == len(a.median_shape) == len(b.median_shape)
    spacing = same_dim and all(math.isclose(x, y, rel_tol=1e-3) for x, y in zip(a.spacing, b.spacing))
    shape = same_dim and all(abs(x - y) <= 0.5 for x, y in zip(a.median_shape, b.median_shape))
    return {"spacing": spacing, "median_shape": shape}


def report(results: dict[str, ToolResult], cases: int, gpu_memory_gb: float, matched: bool) -> dict[str, Any]:
    """Print the timing table, the ratios and the plans comparison; return the comparison for the JSON file."""
    head = f"{'tool':<22} {'wall s':>8} {'cases/s':>8} {'CPU s':>8} {'peak RSS MB':>12} {'peak PSS MB':>12}"
    print(f"\n{head}\n{'-' * len(head)}")
    for r in results.values():
        print(f"{r.tool + ' ' + r.version:<22} {r.best_wall_s:>8.2f} {cases / r.best_wall_s:>8.2f} "
              f"{r.best_cpu_s:>8.1f} {r.peak_rss_bytes / MB:>12.0f} {r.peak_pss_bytes / MB:>12.0f}")
    out: dict[str, Any] = {}
    if len(results) == 2:
        ours, theirs = results[XTLUNET], results[NNUNET]
        out["throughput_ratio"] = theirs.best_wall_s / ours.best_wall_s
        out["cpu_ratio"] = ours.best_cpu_s / theirs.best_cpu_s
        out["peak_rss_ratio"] = ours.peak_rss_bytes / theirs.peak_rss_bytes
        out["peak_pss_ratio"] = ours.peak_pss_bytes / theirs.peak_pss_bytes if theirs.peak_pss_bytes else None
        pss = f", peak PSS {out['peak_pss_ratio']:.2f}x" if out["peak_pss_ratio"] else ""
        print(f"\nxtlunet / nnU-Net v2: throughput (cases/s) {out['throughput_ratio']:.2f}x, "
              f"CPU time {out['cpu_ratio']:.2f}x, peak RSS {out['peak_rss_ratio']:.2f}x{pss}")
    print(f"({MEMORY_NOTE})")
    print(f"\n{CONFIGURATION} plans (axes in each tool's transposed order, coarse axis first):")
    head = f"{'tool':<11} {'transpose':<10} {'target spacing (mm)':<26} {'median shape':<18} {'patch':<16} {'batch':>5}"
    print(f"{head}\n{'-' * len(head)}")
    for r in results.values():
        p = r.plans
        print(f"{r.tool:<11} {str(p.transpose_forward):<10} {fmt_axes(p.spacing):<26} {fmt_axes(p.median_shape):<18} "
              f"{fmt_axes(p.patch_size):<16} {p.batch_size:>5}")
    if len(results) == 2:
        theirs_plan, ours_plan = results[NNUNET].plans, results[XTLUNET].plans
        agree = plans_agree(theirs_plan, ours_plan)
        out["plans_agree"] = agree
        out["spacing_matched"] = matched
        print("agree: " + ", ".join(f"{k.replace('_', ' ')} {'yes' if v else 'NO'}" for k, v in agree.items())
              + (" (nnU-Net was given xtlunet's spacing: --match-spacing)" if matched else ""))
        if not agree["spacing"]:
            ratio = math.prod(ours_plan.median_shape) / math.prod(theirs_plan.median_shape)
            out["median_voxels_ratio"] = ratio
            print("\n" + SPACING_WARNING.format(ratio=ratio))
    print("\nnote: " + FAIRNESS_NOTE.format(gb=gpu_memory_gb))
    busy = [r for t in results.values() for r in t.runs if r.contended]
    out["contended_runs"] = len(busy)
    if busy:
        worst = max(r.other_cpu_s / r.wall_s for r in busy)
        best_busy = [t.tool for t in results.values() if min(t.runs, key=lambda r: r.wall_s).contended]
        verdict = (f"the best wall time of {' and '.join(best_busy)} comes from such a run and is not reliable: "
                   "rerun on an idle machine, with more --repeats or --wait-idle" if best_busy
                   else "the best wall times shown come from undisturbed runs")
        print(f"\nnote: other processes competed for the CPUs in {len(busy)} of the "
              f"{sum(len(t.runs) for t in results.values())} runs (up to {worst:.2f} cores on average); {verdict}.")
        out["contended_best"] = best_busy
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the dataset, run both tools, print and optionally save the comparison."""
    args = parse_args(argv)
    tools = {"both": [NNUNET, XTLUNET], "nnunet": [NNUNET], "xtlunet": [XTLUNET]}[args.only]
    if args.match_spacing:
        tools = [XTLUNET, NNUNET]
    venv = args.nnunet_venv.expanduser().absolute()
    install_s = ensure_nnunet_venv(venv, args.torch_spec, args.nnunet_spec) if NNUNET in tools else None
    work = args.work.expanduser().absolute() if args.work else Path(tempfile.mkdtemp(prefix="xtlunet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    verify = not args.no_verify
    try:
        raw = work / "raw"
        fresh(raw)
        gen_s = make_dataset(raw, args.cases, args.seed)
        print(f"wrote {raw / DATASET_NAME}: {args.cases} training cases in {gen_s:.1f} s", flush=True)
        outs = {t: work / ("nnunet" if t == NNUNET else "xtlunet") for t in tools}
        envs = {t: tool_env(t, raw, outs[t], args.np, args.threads, venv) for t in tools}
        results = {t: ToolResult(t, package_version(venv_python(venv), "nnunetv2") if t == NNUNET
                                 else package_version(sys.executable, "xtlunet")) for t in tools}
        for repeat in range(args.repeats):
            for tool in tools:
                if tool == NNUNET:
                    spacing = raw_axis_spacing(results[XTLUNET].plans) if args.match_spacing else None
                    command = nnunet_command(venv, args.np, verify, spacing)
                else:
                    command = xtlunet_command(args.np, verify, args.gpu_memory_gb)
                if repeat == 0:
                    print(f"{tool}: {' '.join(command)}", flush=True)
                if args.wait_idle > 0:
                    wait_for_idle(args.wait_idle)
                measure_tool(results[tool], command, envs[tool], outs[tool], args.cases, work, args.timeout)
        ordered = {t: results[t] for t in (NNUNET, XTLUNET) if t in results}
        summary = report(ordered, args.cases, args.gpu_memory_gb, args.match_spacing)
        if args.json:
            doc = {"dataset": DATASET_NAME, "cases": args.cases, "configuration": CONFIGURATION, "np": args.np,
                   "verify": verify, "repeats": args.repeats, "threads": args.threads,
                   "match_spacing": args.match_spacing, "gpu_memory_gb": args.gpu_memory_gb,
                   "nnunet_install_s": install_s, "dataset_write_s": gen_s,
                   "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                               "platform": platform.platform()},
                   "tools": {t: r.to_json(args.cases) for t, r in ordered.items()},
                   **summary, "note": FAIRNESS_NOTE.format(gb=args.gpu_memory_gb)}
            write_results(args.json, doc)
    finally:
        release_work(work, args.work, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())

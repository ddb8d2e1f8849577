"""The measured processes of benchmarks/train_step.py: the two drivers that time a training step inside the measured
process (nnU-Net's nnUNetTrainer in its venv, xtlunet's step as a fold runs it), and how the parent runs one and
reads its result (`StepRun`). A driver is started as `train_step.py --_driver nnunet|xtlunet SPEC_JSON`.
"""
from __future__ import annotations

import contextlib
import json
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Measurement, machine_busy_cpu_s, run_measured  # noqa: E402
from plan_and_preprocess import BUSY_FRACTION, CONFIGURATION, DATASET_ID, wait_for_idle  # noqa: E402

TRAIN_STEP = Path(__file__).resolve().parent / "train_step.py"
MB = 2 ** 20
RESULT_TAG = "TRAIN_STEP_RESULT "


def contended(m: Measurement) -> bool:
    """Whether other processes used more than BUSY_FRACTION cores on average during a measured run."""
    return m.other_cpu_s > BUSY_FRACTION * m.wall_s


# ---------------------------------------------------------------------------------------------------------------
# The drivers (run inside the measured process)
# ---------------------------------------------------------------------------------------------------------------

_TIMED_USAGE: dict[str, float] = {}  # user/system CPU seconds and minor page faults of the timed iterations
_OTHER_CPU: list[float] = []  # per timed iteration: CPU seconds the rest of the machine used meanwhile


def _time_steps(step, iters: int, warmup: int) -> list[float]:
    """Seconds of each of `iters` calls of step() after `warmup` untimed ones.

    Per call, the CPU time other processes used meanwhile goes to _OTHER_CPU (busy CPU of the machine from
    /proc/stat minus this process's own); CPU use and page faults of all timed calls go to _TIMED_USAGE.
    """
    for _ in range(warmup):
        step()
    out = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(iters):
        machine, own = machine_busy_cpu_s(), time.process_time()
        start = time.perf_counter()
        step()
        out.append(time.perf_counter() - start)
        _OTHER_CPU.append(max(0.0, machine_busy_cpu_s() - machine - (time.process_time() - own)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    _TIMED_USAGE.update(user_s=after.ru_utime - before.ru_utime, sys_s=after.ru_stime - before.ru_stime,
                        minor_faults=after.ru_minflt - before.ru_minflt)
    return out


def _random_batch(batch: int, channels: int, patch: Sequence[int], classes: int, seed: int):
    """A random float input (B, C, *patch) and a random integer label map (B, *patch)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *patch, generator=g)
    seg = torch.randint(0, classes, (batch, *patch), generator=g)
    return x, seg


def _report(result: dict[str, Any]) -> None:
    """Print the driver's result as one tagged JSON line."""
    result["ru_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["timed_usage"] = dict(_TIMED_USAGE)
    result["other_cpu"] = list(_OTHER_CPU)
    print(RESULT_TAG + json.dumps(result), flush=True)


def driver_nnunet(spec: dict[str, Any]) -> None:
    """nnU-Net's nnUNetTrainer on the bench plans: initialize(), then train_step() on a random batch."""
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    from nnunetv2.run.run_training import get_trainer_from_args

    t0 = time.perf_counter()
    trainer = get_trainer_from_args(str(DATASET_ID), CONFIGURATION, 0, "nnUNetTrainer", spec["plans"],
                                    device=torch.device("cpu"))
    trainer.initialize()
    trainer.network.train()
    build_s = time.perf_counter() - t0
    cm = trainer.configuration_manager
    patch, batch = list(cm.patch_size), trainer.batch_size
    classes = trainer.label_manager.num_segmentation_heads
    x, seg = _random_batch(batch, trainer.num_input_channels, patch, classes, spec["seed"])
    scales = trainer._get_deep_supervision_scales()
    targets = []
    for s in scales:  # nnU-Net's targets: (B, 1, *scaled patch), float
        step = [int(round(1 / v)) for v in s]
        targets.append(seg[(slice(None), *(slice(None, None, v) for v in step))][:, None].float())
    batch_dict = {"data": x, "target": targets}
    losses: list[float] = []

    def step() -> None:
        losses.append(float(np.asarray(trainer.train_step(batch_dict)["loss"])))

    times = _time_steps(step, spec["iters"], spec["warmup"])
    _report({"tool": "nnunet", "times": times, "build_s": build_s, "patch": patch, "batch": batch,
             "parameters": sum(p.numel() for p in trainer.network.parameters()), "outputs": len(scales),
             "threads": torch.get_num_threads(), "loss_first": losses[0], "loss_last": losses[-1],
             "torch": torch.__version__})


def driver_xtlunet(spec: dict[str, Any]) -> None:
    """xtlunet's training step exactly as a fold runs it: ScratchTrainer's hooks on the bench plans (network, loss,
    optimiser, poly schedule) and the one TrainStep (autocast, grad scaler, channels-last, clipping); on CUDA as the
    spec's variant says (precision bf16 or fp32, channels_last, compile)."""
    import torch

    torch.set_num_threads(spec["threads"])
    from xtlunet.plans import Plans
    from xtlunet.trainers.arms import ScratchTrainer
    from xtlunet.training.losses import downsample_targets
    from xtlunet.training.optim import apply_schedule
    from xtlunet.training.run_spec import RunSpec
    from xtlunet.training.step import TrainStep, place_network

    t0 = time.perf_counter()
    device = torch.device(spec.get("device", "cpu"))
    trainer = ScratchTrainer.for_plans(RunSpec(str(DATASET_ID), CONFIGURATION, 0), Plans.load(Path(spec["plans_file"])))
    net = place_network(trainer.build_network(), device, spec.get("channels_last", True))
    net.train()
    loss_fn = trainer.loss(net).to(device)
    opt = trainer.optimizer(net)
    train_step = TrainStep(torch.compile(net) if spec.get("compile") else net, loss_fn, opt, device, trainer.grad_clip)
    if spec.get("precision") == "fp32":   # no autocast (CUDA's default is bf16)
        train_step.autocast = contextlib.nullcontext()
    schedule = trainer.schedule()
    build_s = time.perf_counter() - t0
    patch, batch = list(trainer.conf.patch_size), int(trainer.conf.batch_size)
    x, seg = _random_batch(batch, trainer.conf.network().in_channels, patch, trainer.conf.num_outputs, spec["seed"])
    x, seg = x.to(device), seg.to(device)
    targets = downsample_targets(seg, net.deep_supervision_scales())
    losses: list[float] = []
    counter = [0]

    def step() -> None:
        apply_schedule(opt, schedule, counter[0], 1000)
        counter[0] += 1
        losses.append(train_step(x, targets))

    if spec.get("profile"):
        _time_steps(step, 0, spec["warmup"])
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            times = _time_steps(step, spec["iters"], 0)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), flush=True)
    else:
        times = _time_steps(step, spec["iters"], spec["warmup"])
    _report({"tool": "xtlunet", "times": times, "build_s": build_s, "patch": patch, "batch": batch,
             "parameters": sum(p.numel() for p in net.parameters()), "outputs": len(targets),
             "threads": torch.get_num_threads(), "loss_first": losses[0], "loss_last": losses[-1],
             "torch": torch.__version__,
             "gpu_peak_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None})


# ---------------------------------------------------------------------------------------------------------------
# The parent side: run a driver as a measured process and read its result
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class StepRun:
    """One driver run: its per-iteration times and the memory of its process."""

    label: str
    times: list[float]
    patch: list[int]
    batch: int
    parameters: int
    outputs: int
    threads: int
    build_s: float
    wall_s: float
    peak_rss_bytes: int
    peak_pss_bytes: int | None
    ru_maxrss_bytes: int
    other_cpu_s: float
    contended: bool
    loss_first: float
    loss_last: float
    timed_usage: dict[str, float]   # user_s, sys_s, minor_faults of the timed iterations
    other_cpu: list[float]          # per timed iteration: CPU seconds other processes used meanwhile
    command: list[str]
    gpu_peak_bytes: int | None = None   # torch.cuda.max_memory_allocated of a CUDA run

    @property
    def clean_times(self) -> list[float]:
        """Times of the iterations during which other processes used at most BUSY_FRACTION cores."""
        return [t for t, o in zip(self.times, self.other_cpu) if o <= BUSY_FRACTION * t]

    @property
    def median_s(self) -> float:
        """Median seconds per iteration over the undisturbed iterations (over all when none was)."""
        return statistics.median(self.clean_times or self.times)


def run_driver(label: str, python: Path | str, tool: str, spec: dict[str, Any], env: dict[str, str],
               cwd: Path, timeout_s: float, wait_idle_s: float) -> StepRun:
    """Run one driver as a measured subprocess; exit with its output when it fails."""
    cmd = [str(python), str(TRAIN_STEP), "--_driver", tool, json.dumps(spec)]
    if wait_idle_s > 0:
        wait_for_idle(wait_idle_s)
    m = run_measured(cmd, env, cwd=cwd, timeout_s=timeout_s, tail_lines=80)
    lines = [ln for ln in m.output_tail.splitlines() if ln.startswith(RESULT_TAG)]
    if m.returncode != 0 or not lines:
        sys.exit(f"{label} driver failed (exit {m.returncode}): {' '.join(cmd)}\n{m.output_tail}")
    if spec.get("profile"):
        print(m.output_tail.split(RESULT_TAG)[0][-8000:])
    r = json.loads(lines[-1][len(RESULT_TAG):])
    run = StepRun(label, r["times"], r["patch"], r["batch"], r["parameters"], r["outputs"], r["threads"],
                  r["build_s"], m.wall_s, m.peak_rss_bytes, m.peak_pss_bytes, r["ru_maxrss_bytes"], m.other_cpu_s,
                  contended(m), r["loss_first"], r["loss_last"], r["timed_usage"], r["other_cpu"],
                  cmd[:4] + ["SPEC"], r.get("gpu_peak_bytes"))
    print(f"  {label:<26} median {run.median_s:7.3f} s/it over {len(run.clean_times)}/{len(run.times)} undisturbed "
          f"iterations (all: min {min(run.times):.3f}, max {max(run.times):.3f}), "
          f"peak RSS {run.peak_rss_bytes / MB:6.0f} MB, timed: user {run.timed_usage['user_s']:.1f} s, "
          f"sys {run.timed_usage['sys_s']:.1f} s, {run.timed_usage['minor_faults'] / len(run.times):,.0f} "
          "page faults/it"
          + (f", GPU peak {run.gpu_peak_bytes / MB:.0f} MB" if run.gpu_peak_bytes else "")
          + (f"  [busy machine: other processes used {run.other_cpu_s:.1f} CPU-s]" if run.contended else ""),
          flush=True)
    return run

"""Calibration of the planners' memory estimate against measured peaks of real training steps.

For each row (a planned network, patch and batch) it takes two training steps (`xtlunet/networks/memory_measure.py`)
and prints the measured peak beside `estimate_memory_bytes`, for the whole step and for the activation term alone
(peak minus the parameter state against the estimate minus its parameter term). On the CPU each row runs in fp32
and under bf16 autocast; with `--device cuda` the trainers' own step (bf16 autocast, channels-last) runs, and the
caching allocator's reserved peak is shown too, together with larger rows (real plans) that only a GPU holds.

    python benchmarks/memory_calibration.py                       # the CPU table of documentation/planner_rules.md
    python benchmarks/memory_calibration.py --device cuda --json memory_cuda.json
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _measure import machine_info, write_results  # noqa: E402

MIB = 2 ** 20


@dataclass(frozen=True)
class Row:
    """A network (plain or an XTL encoder family), spacing, patch, batch, channels and classes."""

    name: str
    family: str
    spacing: tuple[float, ...]
    patch: tuple[int, ...]
    batch: int
    in_channels: int = 1
    classes: int = 3
    gpu_only: bool = False


ROWS = (
    Row("3D 24x48x48 x2 (1 mm)", "plain", (1.0, 1.0, 1.0), (24, 48, 48), 2),
    Row("2D 96x96 x4", "plain", (1.0, 1.0), (96, 96), 4),
    Row("3D 32x64x64 x2 (1 mm)", "plain", (1.0, 1.0, 1.0), (32, 64, 64), 2),
    Row("3D 16x96x96 x2 (3x0.75x0.75 mm, 2 channels)", "plain", (3.0, 0.75, 0.75), (16, 96, 96), 2, 2),
    Row("3D 48x48x48 x4 (1 mm, 2 classes)", "plain", (1.0, 1.0, 1.0), (48, 48, 48), 4, 1, 2),
    Row("2D 128x128 x8", "plain", (1.0, 1.0), (128, 128), 8),
    Row("2D 192x160 x4 (4 channels, 4 classes)", "plain", (1.0, 1.0), (192, 160), 4, 4, 4),
    Row("XTL resnet18 3D 16x64x64 x2 (3x1x1 mm)", "resnet18", (3.0, 1.0, 1.0), (16, 64, 64), 2),
    # plans of real budgets (BrainTumour-like at 8 GB, a 3d_fullres at 1 mm, a prostate plan): GPU only
    Row("3D 128x192x128 x2 (1 mm, 4 channels, 4 classes)", "plain", (1.0, 1.0, 1.0), (128, 192, 128), 2, 4, 4, True),
    Row("2D 192x160 x155 (4 channels, 4 classes)", "plain", (1.0, 1.0), (192, 160), 155, 4, 4, True),
    Row("3D 80x96x96 x2 (1 mm)", "plain", (1.0, 1.0, 1.0), (80, 96, 96), 2, 1, 3, True),
    Row("3D 16x256x288 x2 (3x0.5x0.5 mm, 2 channels)", "plain", (3.0, 0.5, 0.5), (16, 256, 288), 2, 2, 3, True),
    Row("XTL resnet18 3D 32x160x160 x2 (3x1x1 mm)", "resnet18", (3.0, 1.0, 1.0), (32, 160, 160), 2, 1, 3, True),
)


def description(row: Row):
    """The row's network as the planners build it (plain: DefaultPlanner's rules; else XTLPlanner's)."""
    from planners.default import plain_architecture
    from planners.xtl import XTLPlanner
    from xtlunet.networks.description import family_description

    if row.family == "plain":
        return plain_architecture(list(row.spacing), list(row.patch), row.in_channels)
    planner = SimpleNamespace(source=family_description(row.family, 2, 1), norm="instance",
                              spec=SimpleNamespace(num_channels=row.in_channels))
    return XTLPlanner.architecture(planner, list(row.spacing), list(row.patch))


def measure(row: Row, device: str, precision: str) -> dict:
    """One row at one precision: measured and estimated bytes, total and activation terms."""
    import torch

    from xtlunet.networks import build_network, count_parameters, estimate_memory_bytes
    from xtlunet.networks.memory import PARAMETER_BYTES, PARAMETER_COPIES
    from xtlunet.networks.memory_measure import measure_training_peak

    desc = description(row)
    with torch.device("meta"):   # the parameter count without allocating the network
        params = count_parameters(build_network(desc, "segmentation", row.classes))
    start = time.perf_counter()
    peak = measure_training_peak(desc, row.patch, row.batch, row.classes, device, precision)
    estimate = estimate_memory_bytes(desc, list(row.patch), row.batch, row.classes,
                                     activation_bytes=4 if precision == "fp32" else 2)
    # measured parameter state: weights, gradients, momentum (SGD: 3 fp32 copies); the estimate assumes 4 (Adam)
    measured_act = peak.allocated - 3 * PARAMETER_BYTES * params
    estimated_act = estimate - PARAMETER_COPIES * PARAMETER_BYTES * params
    return {"row": row.name, "precision": precision, "params": params, "peak_bytes": peak.allocated,
            "reserved_bytes": peak.reserved, "estimate_bytes": estimate, "ratio": peak.allocated / estimate,
            "activation_ratio": measured_act / estimated_act, "seconds": time.perf_counter() - start}


def markdown(results: list[dict], device: str) -> str:
    """The calibration table: one line per row and precision."""
    cuda = device.startswith("cuda")
    head = "| network, patch × batch | params | precision | peak / estimate | activations measured / estimated |"
    head += " reserved peak |" if cuda else ""
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in results:
        line = (f"| {r['row']} | {r['params'] / 1e6:.1f} M | {r['precision']} | {r['peak_bytes'] / MIB:.0f} / "
                f"{r['estimate_bytes'] / MIB:.0f} MiB = {r['ratio']:.2f} | {r['activation_ratio']:.2f} |")
        lines.append(line + (f" {r['reserved_bytes'] / MIB:.0f} MiB |" if cuda else ""))
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu (fp32 and bf16 autocast) or cuda[:N] (the trainers' step)")
    p.add_argument("--rows", nargs="+", type=int, default=None,
                   help="row numbers to run (0-based; default: every row the device can hold)")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.rows and any(not 0 <= k < len(ROWS) for k in args.rows):
        p.error(f"--rows take values 0 to {len(ROWS) - 1}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure every chosen row and print the table."""
    sys.path.insert(0, str(HERE.parent))   # the planners package of this checkout
    args = parse_args(argv)
    cuda = args.device.startswith("cuda")
    rows = [ROWS[k] for k in args.rows] if args.rows else [r for r in ROWS if cuda or not r.gpu_only]
    results = []
    for row in rows:
        for precision in (("bf16",) if cuda else ("fp32", "bf16")):
            r = measure(row, args.device, precision)
            print(f"{row.name} {precision}: peak {r['peak_bytes'] / MIB:.0f} MiB, estimate "
                  f"{r['estimate_bytes'] / MIB:.0f} MiB (ratio {r['ratio']:.2f}, activations "
                  f"{r['activation_ratio']:.2f}), {r['seconds']:.0f} s", flush=True)
            results.append(r)
    print("\n" + markdown(results, args.device))
    if args.json:
        write_results(args.json, {"device": args.device, "results": results, "rows": [asdict(r) for r in rows],
                                  "machine": machine_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""TransferReport: what happened to every target tensor in a 2D→3D weight transfer."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xtlunet.networks.build import GROUPS
from xtlunet.utils.atomic import write_json

STATUSES = ("loaded", "converted", "channel-adapted", "skipped", "new")
FROM_SOURCE = ("loaded", "converted", "channel-adapted")


@dataclass
class TensorRow:
    """One target tensor: its status, where it came from, and by which rule."""

    name: str
    status: str                       # loaded / converted / channel-adapted / skipped / new
    target_shape: list[int]
    source_key: str | None = None
    source_shape: list[int] | None = None
    rule: str | None = None           # copy / inflate / center / acs / repeat-1-to-N, ... joined by '+'
    reason: str | None = None
    is_parameter: bool = True         # False for buffers (excluded from coverage)
    group: str = "encoder"

    @property
    def numel(self) -> int:
        """Number of elements of the target tensor."""
        n = 1
        for s in self.target_shape:
            n *= s
        return n


@dataclass
class UnusedKey:
    """A source tensor that went nowhere, and why."""

    key: str
    shape: list[int]
    reason: str


@dataclass
class TransferReport:
    """Per-tensor rows, unused source keys and parameter coverage per group (encoder/decoder/head)."""

    mode: str
    source: str
    source_format: str
    rows: list[TensorRow] = field(default_factory=list)
    unused: list[UnusedKey] = field(default_factory=list)
    coverage: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, list[int]] = field(default_factory=dict)   # group → [from source, total]
    seconds: float = 0.0
    chain: list[str] = field(default_factory=list)   # the weights' history, first step first (see init_chain)

    def compute_coverage(self) -> None:
        """Fill `coverage` and `parameters`: fraction of target parameters (not buffers) from the source."""
        self.parameters = {g: [0, 0] for g in GROUPS}
        for row in self.rows:
            if not row.is_parameter or row.group not in self.parameters:
                continue
            self.parameters[row.group][1] += row.numel
            if row.status in FROM_SOURCE:
                self.parameters[row.group][0] += row.numel
        self.coverage = {g: (got / total if total else 0.0) for g, (got, total) in self.parameters.items()}

    def counts(self) -> dict[str, int]:
        """Number of target tensors per status."""
        out = {s: 0 for s in STATUSES}
        for row in self.rows:
            out[row.status] += 1
        return out

    def rows_with(self, status: str) -> list[TensorRow]:
        """The rows of one status."""
        return [r for r in self.rows if r.status == status]

    def summary(self) -> str:
        """One log line: coverage per group, counts per status, unused source keys."""
        groups = []
        for g in GROUPS:
            got, total = self.parameters.get(g, [0, 0])
            text = f"{g} {100 * self.coverage.get(g, 0.0):.1f}%"
            if g == "encoder":
                text += f" ({_millions(got)}/{_millions(total)} params)"
            groups.append(text)
        c = self.counts()
        statuses = ", ".join(f"{c[s]} {s}" for s in STATUSES)
        n = len(self.unused)
        chain = f"; chain {' → '.join(self.chain)}" if self.chain else ""
        return (f"transfer {self.mode}: {', '.join(groups)}; {statuses}; "
                f"{n} unused source key{'' if n == 1 else 's'}{chain}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "TransferReport":
        """Inverse of to_json."""
        return cls(mode=d["mode"], source=d["source"], source_format=d["source_format"],
                   rows=[TensorRow(**r) for r in d.get("rows", [])],
                   unused=[UnusedKey(**u) for u in d.get("unused", [])],
                   coverage=dict(d.get("coverage", {})),
                   parameters={k: list(v) for k, v in d.get("parameters", {}).items()},
                   seconds=float(d.get("seconds", 0.0)), chain=list(d.get("chain", [])))

    def save(self, path: str | Path) -> None:
        """Write the report as JSON atomically (transfer_report.json next to the checkpoint)."""
        write_json(path, self.to_json())


def _millions(n: int) -> str:
    """A parameter count in a short human form (11.2M, 35.1k, 812)."""
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 1_000:
        return f"{n / 1e3:.1f}k"
    return str(n)

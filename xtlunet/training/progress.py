"""Per-epoch log (training_log.txt) and curve (progress.png), both written atomically."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xtlunet.utils.atomic import atomic_path


@dataclass
class Progress:
    """Epoch records of one run; `add` appends, logs a line and redraws the curve."""

    log_file: Path
    png_file: Path
    metric_name: str = "metric"
    records: list[dict[str, float]] = field(default_factory=list)

    def message(self, text: str) -> None:
        """Append a time-stamped line to the log file."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {text}\n")

    def add(self, record: dict[str, float]) -> str:
        """Record one epoch (epoch, train_loss, val_loss, metric, lr, epoch_time); returns the log line."""
        self.records.append(dict(record))
        ema = self.moving_average()
        self.records[-1]["metric_ema"] = ema
        line = (f"epoch {int(record['epoch'])}: train_loss {record['train_loss']:.4f}  val_loss {record['val_loss']:.4f}  "
                f"{self.metric_name} {record['metric']:.4f} (ema {ema:.4f})  lr {record['lr']:.2e}  "
                f"time {record['epoch_time']:.1f}s")
        self.message(line)
        self.plot()
        return line

    def moving_average(self, alpha: float = 0.9) -> float:
        """Exponential moving average of the metric (NaN values skipped)."""
        ema = float("nan")
        for r in self.records:
            m = r["metric"]
            if np.isnan(m):
                continue
            ema = m if np.isnan(ema) else alpha * ema + (1 - alpha) * m
        return ema

    def plot(self) -> None:
        """Redraw progress.png: losses and metric (with its moving average), learning rate, epoch time."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ep = [r["epoch"] for r in self.records]
        fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
        ax = axes[0]
        ax.plot(ep, [r["train_loss"] for r in self.records], "b-", label="train loss")
        ax.plot(ep, [r["val_loss"] for r in self.records], "r-", label="val loss")
        ax.set_ylabel("loss")
        ax2 = ax.twinx()
        ax2.plot(ep, [r["metric"] for r in self.records], "g:", label=self.metric_name)
        ax2.plot(ep, [r.get("metric_ema", np.nan) for r in self.records], "g-", label=f"{self.metric_name} (ema)")
        ax2.set_ylabel(self.metric_name)
        ax.legend(loc="upper left")
        ax2.legend(loc="upper right")
        axes[1].plot(ep, [r["lr"] for r in self.records], "k-")
        axes[1].set_ylabel("learning rate")
        axes[2].plot(ep, [r["epoch_time"] for r in self.records], "m-")
        axes[2].set_ylabel("epoch time (s)")
        axes[2].set_xlabel("epoch")
        fig.tight_layout()
        with atomic_path(self.png_file) as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)

    def state(self) -> list[dict[str, Any]]:
        """Records, for checkpoints."""
        return [dict(r) for r in self.records]

"""What both tasks share: the batch pipeline (loader + batchgenerators augmentation, in background workers)."""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator

from batchgenerators.dataloading.data_loader import SlimDataLoaderBase
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

from xtlunet.plans import ConfigurationPlan
from xtlunet.training.augmentation import AugmentationConfig, build_augmentation
from xtlunet.training.data import extraction_size


def extract_size(conf: ConfigurationPlan, cfg: AugmentationConfig) -> list[int]:
    """Size of the region cut before augmentation crops it to the patch."""
    return extraction_size(conf.patch_size, cfg.rotation_deg, cfg.scale[0], cfg.in_plane_only)


class Augmenter(MultiThreadedAugmenter):
    """batchgenerators' MultiThreadedAugmenter that stops, rather than hangs, when a worker process dies.

    A worker killed mid-put (e.g. SIGBUS on a preprocessed array truncated under its memory map) leaves half a
    batch in its queue's pipe. Reading it blocks forever: batchgenerators' results thread may already be blocked
    on it (so it never notices the death), and its shutdown drains every queue. Here a watcher thread raises the
    abort flag when a worker dies abnormally, and shutdown leaves the dead workers' queues alone.
    """

    def _start(self) -> None:
        """Start the workers, then the watcher."""
        if self.was_initialized:
            return
        super()._start()
        threading.Thread(target=_watch_workers, args=(list(self._processes), self.abort_event), daemon=True,
                         name="xtlunet-augmenter-watcher").start()

    def _finish(self, timeout: float = 10, force: bool = False) -> None:
        """Set aside the queues of workers that died abnormally (never read again), then shut down as usual."""
        dead = {i for i, p in enumerate(self._processes) if p.exitcode not in (0, None)}
        if dead:
            # kept referenced, not closed: a blocked reader thread may still hold the pipe
            self._abandoned = [*getattr(self, "_abandoned", []), *(self._queues[i] for i in dead)]
            self._processes = [p for i, p in enumerate(self._processes) if i not in dead]
            self._queues = [q for i, q in enumerate(self._queues) if i not in dead]
            timeout = min(timeout, 2.0)   # the results thread may be blocked on a dead worker's pipe for good
        super()._finish(timeout, force)


def _watch_workers(processes: list[Any], abort_event: Any, interval: float = 0.2) -> None:
    """Raise the abort flag when a worker exits abnormally (until the augmenter shuts down)."""
    while not abort_event.is_set():
        if any(p.exitcode not in (0, None) for p in processes):
            abort_event.set()
            return
        time.sleep(interval)


def batch_stream(loader: SlimDataLoaderBase, conf: ConfigurationPlan, cfg: AugmentationConfig, workers: int,
                 seed: int, with_seg: bool) -> Iterator[dict[str, Any]]:
    """Augmented batches, in `workers` background processes (0: in this process)."""
    transform = build_augmentation(conf.patch_size, cfg, with_seg=with_seg)
    if workers <= 0:
        return SingleThreadedAugmenter(loader, transform)
    return Augmenter(loader, transform, workers, num_cached_per_queue=2,
                                  seeds=[seed + i for i in range(workers)], pin_memory=False, timeout=60)

"""Read a state dict from a checkpoint file with `weights_only=True` and nothing else."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Mapping

from torch import Tensor

from xtlunet.errors import XtlunetError
from xtlunet.utils.torch_io import safe_torch_load

FORMAT_VERSION = 1  # our pretrain-2d checkpoint: {'format_version', 'state_dict', 'architecture', ...}
STATE_DICT_KEYS = ("state_dict", "network_weights", "model")  # ours / nnU-Net / common training scripts


def load_checkpoint_state(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Load (state dict, meta) from a checkpoint; meta holds every other top-level field."""
    return split_checkpoint(safe_torch_load(path), path)


def split_checkpoint(obj: Any, path: str | Path = "<checkpoint>") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Find the state dict in a loaded checkpoint object; return it and the remaining fields."""
    if not isinstance(obj, Mapping):
        raise XtlunetError(f"checkpoint holds a {type(obj).__name__}, not a dict", path=path,
                           fix="save a state dict or {'state_dict': ...}")
    if "format_version" in obj:
        version = obj["format_version"]
        if version != FORMAT_VERSION:
            raise XtlunetError(f"checkpoint format_version {version} is not supported (expected {FORMAT_VERSION})",
                               path=path, fix="update xtlunet or re-run pretrain-2d")
    for key in STATE_DICT_KEYS:
        if key in obj and _is_state_dict(obj[key]):
            return dict(obj[key]), {k: v for k, v in obj.items() if k != key}
    if _is_state_dict(obj):
        return dict(obj), {}
    raise XtlunetError(f"no state dict in checkpoint (top-level keys: {', '.join(map(str, list(obj)[:8]))})",
                       path=path, fix="save a bare state dict or one under 'state_dict', 'network_weights' "
                                      "or 'model'")


def _is_state_dict(obj: Any) -> bool:
    """True for a non-empty mapping of names to tensors."""
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()))


def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of a file's sha256: how plans and reports name a checkpoint's exact content (read once
    per file version: trainer, loop and experiment ask for the same weights' digest)."""
    st = os.stat(path)
    return _digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 prefix of one version (size, mtime) of a file."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


NO_INIT = "none"


def chain_step(kind: str, path: str | Path) -> str:
    """One step of a weights' history: 'imagenet:<sha>' for natural-image weights, 'mammograms:<sha>' for a
    pretrain-2d checkpoint (the sha being file_digest of the file)."""
    return f"{kind}:{file_digest(path)}"


def init_chain(meta: dict[str, Any]) -> list[str]:
    """The history a pretrain-2d checkpoint records (its --init weights, or 'none'), without the checkpoint itself."""
    recorded = (meta.get("provenance") or {}).get("init_chain")
    return [str(v) for v in recorded] if isinstance(recorded, (list, tuple)) and recorded else [NO_INIT]

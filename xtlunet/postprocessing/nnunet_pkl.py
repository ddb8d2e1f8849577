"""nnU-Net v2's `postprocessing.pkl`, read without nnU-Net installed and without running any pickled code.

nnU-Net's find_best_configuration saves `(pp_fns, pp_fn_kwargs)`: functions applied in order, each
`remove_all_but_largest_component_from_segmentation(seg, labels_or_regions, background_label=0)`. One step joins
its labels (an int, a tuple of label values for a region, or a list of those) into one mask, keeps the mask's
largest connected component (full connectivity, and every component of the largest size when several tie, as
nnU-Net's acvl_utils does) and sets the rest to the background label. The unpickler only resolves that one function (and numpy scalars); anything else in the file
is refused by name, so a pickle cannot run code here.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xtlunet.errors import XtlunetError
from xtlunet.postprocessing.components import drop_components, label_components

KEEP_LARGEST_FN = ("nnunetv2.postprocessing.remove_connected_components",
                   "remove_all_but_largest_component_from_segmentation")
_NUMPY_SCALARS = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype")}
FIX = "give the postprocessing.pkl that nnU-Net v2's find_best_configuration wrote, or a postprocessing.json"


class _KeepLargest:
    """Stands for nnU-Net's keep-largest function in an unpickled file."""


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global other than nnU-Net's keep-largest function (the message is its dotted name)."""


class _SafeUnpickler(pickle.Unpickler):
    """Resolves nnU-Net's keep-largest function and numpy scalars; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        """The object a global of the pickle names."""
        if (module, name) == KEEP_LARGEST_FN:
            return _KeepLargest
        if (module, name) in _NUMPY_SCALARS:
            return super().find_class(module, name)
        raise _RefusedGlobal(f"{module}.{name}")


@dataclass(frozen=True)
class KeepLargestStep:
    """One nnU-Net step: the labels joined into one mask, whose largest component (or tied largest ones) is kept."""

    labels: tuple[int, ...]
    background: int = 0

    def apply(self, seg: np.ndarray) -> np.ndarray:
        """A copy of seg with the mask's other components set to the background label."""
        lab, sizes = label_components(np.isin(seg, self.labels))
        keep = sizes == sizes.max() if sizes.size else sizes.astype(bool)   # ties: all kept, as nnU-Net
        return drop_components(seg, lab, keep, self.background)

    def text(self) -> str:
        """'keep the largest component of labels 1+2'."""
        return f"keep the largest component of label{'s' if len(self.labels) > 1 else ''} " \
               + "+".join(map(str, self.labels))


@dataclass(frozen=True)
class NnunetPostprocessing:
    """The steps of an nnU-Net postprocessing.pkl, applied in order."""

    steps: tuple[KeepLargestStep, ...]

    def apply(self, seg: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """A copy of a label map with every step applied (spacing is unused: nnU-Net's steps count voxels)."""
        out = np.array(seg, copy=True)
        for step in self.steps:
            out = step.apply(out)
        return out

    def describe(self) -> list[str]:
        """One line per step."""
        return [step.text() for step in self.steps] or ["no operation"]

    @classmethod
    def load(cls, path: Path) -> "NnunetPostprocessing":
        """Read and check a postprocessing.pkl, naming the file in any refusal."""
        if not path.is_file():
            raise XtlunetError("file not found", path=path, fix="check the path")
        try:
            with path.open("rb") as fh:
                content = _SafeUnpickler(fh).load()
        except _RefusedGlobal as exc:
            raise XtlunetError(f"the pickle calls {exc}, which is not nnU-Net's keep-largest post-processing",
                               path=path, fix=f"{FIX}; xtlunet applies only nnU-Net's standard operation") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, ImportError,
                MemoryError) as exc:
            raise XtlunetError(f"not a readable pickle ({type(exc).__name__}: {exc})", path=path, fix=FIX) from None
        try:
            return cls(tuple(_steps(content)))
        except (TypeError, ValueError) as exc:
            raise XtlunetError(f"not an nnU-Net post-processing file ({exc})", path=path, fix=FIX) from None


def _steps(content: Any) -> list[KeepLargestStep]:
    """The steps of an unpickled (pp_fns, pp_fn_kwargs) pair; ValueError/TypeError when it is not one."""
    if not (isinstance(content, (tuple, list)) and len(content) == 2
            and all(isinstance(c, (tuple, list)) for c in content)):
        raise ValueError("expected a pair (functions, keyword arguments)")
    fns, kwargs = content
    if len(fns) != len(kwargs):
        raise ValueError(f"{len(fns)} functions but {len(kwargs)} sets of keyword arguments")
    steps = []
    for k, (fn, kw) in enumerate(zip(fns, kwargs)):
        if fn is not _KeepLargest:
            raise ValueError(f"step {k} is not nnU-Net's keep-largest function")
        if not isinstance(kw, dict) or "labels_or_regions" not in kw or set(kw) - {"labels_or_regions",
                                                                                   "background_label"}:
            raise ValueError(f"step {k} has keyword arguments {kw!r}")
        steps.append(KeepLargestStep(_labels(kw["labels_or_regions"], k), _int(kw.get("background_label", 0), k)))
    return steps


def _labels(value: Any, step: int) -> tuple[int, ...]:
    """Every label value of an int, a region tuple, or a list of those (their union is one mask)."""
    items = value if isinstance(value, list) else [value]
    labels: list[int] = []
    for item in items:
        for v in (item if isinstance(item, tuple) else (item,)):
            labels.append(_int(v, step))
    if not labels:
        raise ValueError(f"step {step} names no label")
    return tuple(dict.fromkeys(labels))


def _int(value: Any, step: int) -> int:
    """A label value as an int (numpy integers accepted); ValueError otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"step {step} has a label value {value!r} that is not an integer")
    return int(value)

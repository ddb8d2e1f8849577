"""QC overlay montages: the slices with the most foreground in three orientations, the reference and predicted
contours over the first channel, and the false-positive and missed lesions boxed.

Lesions are 26-connected components of the foreground (any label > 0; 8-connected in 2D), matched as
`segmentation_metrics.lesion_detection` matches them by default: a predicted component touching no reference voxel
is a false positive, a reference component touching no predicted voxel is missed. The montage is built as an RGB
array in numpy (every pixel placed on purpose, so tests can find them), then framed with a title and a legend.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from xtlunet.utils.atomic import atomic_path
from xtlunet.errors import plural

log = logging.getLogger("xtlunet")

REF_COLOUR = (0, 230, 0)          # green: just outside the reference foreground
PRED_COLOUR = (255, 0, 255)       # magenta: on the edge of the predicted foreground
FP_COLOUR = (255, 150, 0)         # orange box: a predicted lesion that touches no reference voxel
MISSED_COLOUR = (0, 200, 255)     # cyan box: a reference lesion that touches no predicted voxel
GAP_COLOUR = (24, 24, 24)
LEGEND = (("reference contour", REF_COLOUR), ("prediction contour", PRED_COLOUR),
          ("false positive (predicted lesion touching no reference)", FP_COLOUR),
          ("missed (reference lesion touching no prediction)", MISSED_COLOUR))
PLANES = {"S": "axial", "I": "axial", "A": "coronal", "P": "coronal", "L": "sagittal", "R": "sagittal"}
GAP, MARGIN = 4, 3                # pixels between panels; pixels between a lesion and its box
HEAD, LEGEND_ROW = 22, 16         # PNG pixels above the montage (title); per legend line below it


@dataclass(frozen=True)
class Panel:
    """One slice of the montage: its plane, array axis and index, and where its pixels lie in the montage."""

    plane: str
    axis: int
    index: int
    top: int
    left: int
    zoom: tuple[int, int]          # montage pixels per voxel along the panel's rows and columns
    size: tuple[int, int]          # the panel's height and width in pixels

    def pixel(self, row: float, col: float) -> tuple[int, int]:
        """The montage pixel at the centre of voxel (row, col) of this slice."""
        return (self.top + int((row + 0.5) * self.zoom[0]), self.left + int((col + 0.5) * self.zoom[1]))


def display_window(image: np.ndarray, scheme: str = "zscore", props: dict[str, float] | None = None
                   ) -> tuple[float, float]:
    """Grey levels shown black and white: the plan's CT clipping percentiles, else the image's 0.5/99.5 percentiles."""
    if scheme == "ct" and props and "percentile_00_5" in props:
        lo, hi = float(props["percentile_00_5"]), float(props["percentile_99_5"])
    else:
        lo, hi = (float(v) for v in np.percentile(image, [0.5, 99.5]))
    return lo, hi if hi > lo else lo + 1.0


def flagged_lesions(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive components, missed components) as label arrays (0 = none), fully connected components."""
    structure = ndimage.generate_binary_structure(ref.ndim, ref.ndim)
    out = []
    for mask, other in ((pred, ref), (ref, pred)):
        lab, _ = ndimage.label(mask, structure=structure)
        touching = np.unique(lab[other & (lab > 0)])
        lab[np.isin(lab, touching)] = 0
        out.append(lab)
    return out[0], out[1]


def plane_names(axis_codes: str | None, ndim: int = 3) -> list[str]:
    """Name of the plane a slice along each array axis shows, from the index axes' anatomical codes (e.g. 'LPS')."""
    if not axis_codes or len(axis_codes) != ndim:
        return [f"axis {a}" for a in range(ndim)]
    return [PLANES.get(axis_codes[ndim - 1 - a], f"axis {a}") for a in range(ndim)]


def chosen_slices(fg: np.ndarray, axis: int, n: int, flagged: np.ndarray | None = None) -> list[int]:
    """The n slices along `axis` with the most foreground (the middle one without any), in order; slices crossing
    the flagged lesions (largest first) replace the emptiest of them until each of up to n lesions is crossed."""
    other = tuple(a for a in range(fg.ndim) if a != axis)
    counts = fg.sum(axis=other)
    if not counts.any():
        return [fg.shape[axis] // 2]
    chosen = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0][:n]
    if flagged is None or not flagged.any():
        return sorted(chosen)
    sizes, boxes = np.bincount(flagged.ravel()), ndimage.find_objects(flagged)
    reserved: set[int] = set()
    for lesion in np.argsort(-sizes[1:], kind="stable")[: int((sizes[1:] > 0).sum())] + 1:
        box = boxes[lesion - 1]     # a connected lesion crosses every slice of its box along the axis
        hits = [i for i in chosen if box[axis].start <= i < box[axis].stop]
        free = [k for k, i in enumerate(chosen) if i not in reserved]
        if hits:
            reserved.add(hits[0])
        elif len(chosen) < n or free:
            best = box[axis].start + int(np.argmax((flagged[box] == lesion).sum(axis=other)))
            if len(chosen) < n:
                chosen.append(best)
            else:
                chosen[free[-1]] = best
            reserved.add(best)
        if len(chosen) >= n and all(i in reserved for i in chosen):
            break
    return sorted(set(chosen))


def _zooms(shape: Sequence[int], spacing: Sequence[float], target: int) -> list[int]:
    """Integer pixels per voxel along each axis, so voxels keep their physical aspect and the longest edge ≈ target."""
    smin = min(spacing)
    extent = max(n * s / smin for n, s in zip(shape, spacing))
    base = max(1.0, target / extent)
    return [max(1, round(base * s / smin)) for s in spacing]


def _edge(mask: np.ndarray, outside: bool) -> np.ndarray:
    """The 1-pixel boundary of a 2D mask: just outside it, or its own edge pixels."""
    cross = ndimage.generate_binary_structure(2, 1)
    if outside:
        return ndimage.binary_dilation(mask, cross) & ~mask
    return mask & ~ndimage.binary_erosion(mask, cross, border_value=0)


def _box(rgb: np.ndarray, r0: int, r1: int, c0: int, c1: int, colour: tuple[int, int, int]) -> None:
    """Draw a rectangle outline (inclusive corners, clipped to the panel) in place."""
    h, w = rgb.shape[:2]
    r0, r1, c0, c1 = max(r0, 0), min(r1, h - 1), max(c0, 0), min(c1, w - 1)
    rgb[[r0, r1], c0:c1 + 1] = colour
    rgb[r0:r1 + 1, [c0, c1]] = colour


def _enlarge(a: np.ndarray, zoom: tuple[int, int]) -> np.ndarray:
    """A 2D array with each element repeated zoom[0] × zoom[1] times."""
    return np.repeat(np.repeat(a, zoom[0], axis=0), zoom[1], axis=1)


def _slice(a: np.ndarray | None, index: int, axis: int) -> np.ndarray | None:
    """Slice `index` along `axis` (None stays None)."""
    return None if a is None else np.take(a, index, axis=axis)


def _panel(grey: np.ndarray, pred: np.ndarray, ref: np.ndarray | None, fp: np.ndarray | None,
           missed: np.ndarray | None, zoom: tuple[int, int]) -> np.ndarray:
    """One 2D slice as RGB: grey image, contours, boxes around the flagged lesions crossing it."""
    rgb = np.repeat(_enlarge(grey, zoom)[..., None], 3, axis=2)
    if ref is not None:
        rgb[_edge(_enlarge(ref, zoom), outside=True)] = REF_COLOUR
    rgb[_edge(_enlarge(pred, zoom), outside=False)] = PRED_COLOUR
    for lab, colour in ((fp, FP_COLOUR), (missed, MISSED_COLOUR)):
        if lab is None:
            continue
        for found in ndimage.find_objects(lab):
            if found is None:
                continue
            (r, c) = found
            _box(rgb, r.start * zoom[0] - MARGIN, r.stop * zoom[0] - 1 + MARGIN,
                 c.start * zoom[1] - MARGIN, c.stop * zoom[1] - 1 + MARGIN, colour)
    return rgb


def qc_montage(image: np.ndarray, pred: np.ndarray, ref: np.ndarray | None, spacing: Sequence[float],
               window: tuple[float, float], planes: Sequence[str] | None = None, per_plane: int = 3,
               target: int = 150) -> tuple[np.ndarray, list[Panel]]:
    """(RGB montage, its panels): one row per orientation, the `per_plane` slices with the most reference or predicted
    foreground, contours and flagged lesions drawn (see the module docstring). 2D images give one panel."""
    image, pred = np.asarray(image, dtype=np.float32), np.asarray(pred) > 0
    ref = None if ref is None else np.asarray(ref) > 0
    if image.ndim == 2:
        image, pred, ref = image[None], pred[None], None if ref is None else ref[None]
        spacing, planes, axes = (1.0, *spacing), ["image"] * 3, [0]
    else:
        axes = [0, 1, 2]
    if image.shape != pred.shape or (ref is not None and ref.shape != image.shape):
        raise ValueError(f"image {image.shape}, prediction {pred.shape} and reference "
                         f"{None if ref is None else ref.shape} differ in shape")
    planes = list(planes or plane_names(None))
    lo, hi = window
    grey = (np.clip((image - lo) / (hi - lo), 0.0, 1.0) * 255).astype(np.uint8)
    fp, missed = flagged_lesions(pred, ref) if ref is not None else (None, None)
    fg = pred | ref if ref is not None else pred
    flagged = None if fp is None else np.where(fp > 0, fp, np.where(missed > 0, missed + fp.max(), 0))
    zooms = _zooms(image.shape, spacing, target)
    rows: list[list[tuple[np.ndarray, int, tuple[int, int]]]] = []
    for axis in axes:
        keep = [a for a in range(3) if a != axis]
        zoom = (zooms[keep[0]], zooms[keep[1]])
        row = []
        for i in chosen_slices(fg, axis, per_plane, flagged):
            parts = (_slice(a, i, axis) for a in (grey, pred, ref, fp, missed))
            row.append((_panel(*parts, zoom), i, zoom))
        rows.append(row)
    return _assemble(rows, [planes[a] for a in axes], axes)


def _assemble(rows: list[list[tuple[np.ndarray, int, tuple[int, int]]]], names: list[str], axes: list[int]
              ) -> tuple[np.ndarray, list[Panel]]:
    """Lay the panels out in rows (one per orientation) separated by GAP pixels."""
    heights = [max(p.shape[0] for p, _, _ in row) for row in rows]
    width = max(sum(p.shape[1] for p, _, _ in row) + GAP * (len(row) + 1) for row in rows)
    out = np.empty((sum(heights) + GAP * (len(rows) + 1), width, 3), dtype=np.uint8)
    out[:] = GAP_COLOUR
    panels, top = [], GAP
    for row, height, name, axis in zip(rows, heights, names, axes):
        left = GAP
        for rgb, index, zoom in row:
            out[top:top + rgb.shape[0], left:left + rgb.shape[1]] = rgb
            panels.append(Panel(name, axis, index, top, left, zoom, rgb.shape[:2]))
            left += rgb.shape[1] + GAP
        top += height + GAP
    return out, panels


def montage_png(rgb: np.ndarray, panels: Sequence[Panel], title: str, dpi: int = 100) -> bytes:
    """PNG bytes: a title line, the montage pixel for pixel (each panel labelled with its plane and slice), and
    the colour legend under it."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state
    from matplotlib.patches import Rectangle

    head, foot = HEAD, LEGEND_ROW * len(LEGEND) + 8
    h, w = rgb.shape[:2]
    width = max(w, 430, 10 + 6 * len(title))   # ~6 px per character of the 9-point title
    fig = Figure(figsize=(width / dpi, (h + head + foot) / dpi), dpi=dpi, facecolor="white")
    total = h + head + foot
    fig.figimage(rgb, xo=0, yo=foot, origin="upper")
    fig.text(4 / width, 1 - 4 / total, title, va="top", ha="left", fontsize=9)
    for p in panels:
        fig.text((p.left + 2) / width, 1 - (head + p.top + 2) / total, f"{p.plane} {p.index}", va="top",
                 ha="left", fontsize=7, color="white")
    for k, (text, colour) in enumerate(LEGEND):
        y = 1 - (head + h + 6 + LEGEND_ROW * k) / total
        fig.add_artist(Rectangle((4 / width, y - 10 / total), 12 / width, 10 / total, transform=fig.transFigure,
                                 facecolor=tuple(c / 255 for c in colour), edgecolor="none", antialiased=False))
        fig.text(22 / width, y, text, va="top", ha="left", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def case_qc_png(image_file: Path, pred_file: Path, ref_file: Path | None, scheme: str = "zscore",
                props: dict[str, float] | None = None, title: str | None = None) -> bytes:
    """The QC montage of one case from its files (channel-0 image, prediction, reference or None), as PNG bytes."""
    from xtlunet.dataset.io import read_image
    from xtlunet.evaluation.segmentation_metrics import dice

    image, geo = read_image(image_file)
    pred, _ = read_image(pred_file)
    ref = read_image(ref_file)[0] if ref_file is not None else None
    rgb, panels = qc_montage(image, pred, ref, geo.spacing, display_window(image, scheme, props),
                             plane_names(geo.axis_codes(), image.ndim))
    if title is None:
        title = pred_file.name.split(".")[0]
        if ref is not None:
            d = dice(pred > 0, ref > 0)
            fp, missed = flagged_lesions(pred > 0, ref > 0)
            title += (f": Dice {d:.3f}" if np.isfinite(d) else ": both empty") \
                + f"; lesions {len(np.unique(fp)) - 1} false-positive, {len(np.unique(missed)) - 1} missed"
    return montage_png(rgb, panels, title)


def write_png(path: Path, png: bytes) -> Path:
    """Write PNG bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)
    return path


def prediction_qc(in_dir: Path, out_dir: Path, model: object, case_ids: Sequence[str],
                  reference: str | None = None) -> str:
    """`predict --qc [LABELS]`: a montage per predicted case into OUT/qc/CASE.png (contours of LABELS/CASE too when
    given); returns the line to print."""
    from tqdm import tqdm

    from xtlunet.errors import XtlunetError

    conf, plans, spec = model.conf, model.plans, model.spec  # type: ignore[attr-defined]
    if conf.task != "segmentation":
        return "--qc: no overlays for a classification model (the report's finding table shows its ROIs)"
    ref_dir = Path(reference) if reference else None
    if ref_dir is not None and not ref_dir.is_dir():
        raise XtlunetError("--qc reference folder not found", path=ref_dir, fix="give a folder of label files "
                           "named CASE" + spec.file_ending + ", or --qc alone for prediction contours only")
    ending, written = spec.file_ending, []
    for case in tqdm(sorted(case_ids), desc="qc", unit="case"):
        ref = ref_dir / f"{case}{ending}" if ref_dir is not None else None
        if ref is not None and not ref.is_file():
            log.warning("--qc: no reference %s; contours of the prediction only", ref.name)
            ref = None
        png = case_qc_png(in_dir / f"{case}_0000{ending}", out_dir / f"{case}{ending}", ref, conf.normalization[0],
                          plans.foreground_intensity_properties.get("0"))
        written.append(write_png(out_dir / "qc" / f"{case}.png", png))
    return f"wrote {plural(len(written), 'QC montage')} into {out_dir / 'qc'}"

"""QC montages on a hand-made case: contours and lesion boxes in their colours at the right pixels, the slices
shown, the window, the PNG (montage pixel for pixel, legend). `predict --qc` end to end: test_report_html.py."""
from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.image import imread

from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import write_image
from xtlunet.evaluation.segmentation_metrics import lesion_detection
from xtlunet.report.qc import (
    FP_COLOUR,
    HEAD,
    MARGIN,
    MISSED_COLOUR,
    PRED_COLOUR,
    REF_COLOUR,
    case_qc_png,
    chosen_slices,
    display_window,
    flagged_lesions,
    montage_png,
    plane_names,
    qc_montage,
)

SHAPE, SPACING = (12, 40, 48), (3.0, 1.0, 1.0)


def hand_made() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, prediction, reference): lesion A found one voxel off, lesion B missed, a false positive C."""
    image = np.random.default_rng(0).normal(100.0, 10.0, SHAPE).astype(np.float32)
    ref, pred = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    ref[5:8, 10:16, 10:16] = 1          # A
    pred[5:8, 11:17, 10:16] = 1         # A, one voxel lower
    ref[2:4, 30:34, 30:34] = 1          # B: missed
    pred[9:11, 25:28, 4:7] = 1          # C: false positive
    return image, pred, ref


def colour_mask(rgb: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Pixels of exactly this colour."""
    return np.all(rgb == np.array(colour, dtype=np.uint8), axis=-1)


def box_outline(shape: tuple[int, int], panel, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """The montage pixels of the box drawn around voxels rows[0]..rows[1]-1 × cols[0]..cols[1]-1 of a panel."""
    out = np.zeros(shape, bool)
    zr, zc = panel.zoom
    r0, r1 = panel.top + rows[0] * zr - MARGIN, panel.top + rows[1] * zr - 1 + MARGIN
    c0, c1 = panel.left + cols[0] * zc - MARGIN, panel.left + cols[1] * zc - 1 + MARGIN
    out[[r0, r1], c0:c1 + 1] = True
    out[r0:r1 + 1, [c0, c1]] = True
    return out


def test_lesions_flagged_as_lesion_detection_counts_them():
    _, pred, ref = hand_made()
    fp, missed = flagged_lesions(pred > 0, ref > 0)
    counts = lesion_detection(pred, ref)
    assert len(np.unique(fp)) - 1 == counts.n_pred_lesions - counts.n_pred_tp == 1
    assert len(np.unique(missed)) - 1 == counts.n_ref_lesions - counts.n_ref_detected == 1
    assert fp[9, 26, 5] and not fp[6, 12, 12] and missed[2, 31, 31] and not missed[6, 12, 12]
    diagonal = np.zeros((4, 4, 4), bool)                           # touching corners: one 26-connected lesion
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = True
    fp, _ = flagged_lesions(diagonal, np.zeros_like(diagonal))
    assert len(np.unique(fp)) - 1 == 1


def test_slices_with_most_foreground_and_every_flagged_lesion():
    _, pred, ref = hand_made()
    fg = (pred > 0) | (ref > 0)
    assert chosen_slices(fg, 0, 2) == [5, 6]                        # A's slices hold the most foreground
    fp, missed = flagged_lesions(pred > 0, ref > 0)
    flagged = np.where(fp > 0, 1, 0) + np.where(missed > 0, 2, 0)
    axial = chosen_slices(fg, 0, 3, flagged)
    assert any(s in axial for s in (2, 3)) and any(s in axial for s in (9, 10)) and len(axial) == 3
    assert chosen_slices(np.zeros(SHAPE, bool), 1, 3) == [SHAPE[1] // 2]


def test_montage_draws_contours_and_boxes_where_the_lesions_are():
    image, pred, ref = hand_made()
    rgb, panels = qc_montage(image, pred, ref, SPACING, display_window(image), ["axial", "coronal", "sagittal"])
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and {p.plane for p in panels} == {"axial", "coronal", "sagittal"}
    axial = {p.index: p for p in panels if p.axis == 0}
    assert 5 in axial and any(i in axial for i in (2, 3)) and any(i in axial for i in (9, 10))
    assert all(p.zoom == (p.zoom[0], p.zoom[0]) for p in axial.values())        # in-plane voxels stay square
    coronal = next(p for p in panels if p.axis == 1)
    assert coronal.zoom[0] == 3 * coronal.zoom[1]                                 # 3 mm slices drawn 3× taller

    # lesion A on axial slice 5: reference contour just above its first row, prediction edge on the predicted rows
    p = axial[5]
    r, c = p.pixel(10, 12)
    assert tuple(rgb[r - p.zoom[0] // 2 - 1, c]) == REF_COLOUR                    # outside the reference's top edge
    assert tuple(rgb[p.top + 11 * p.zoom[0], c]) == PRED_COLOUR                   # the prediction's top edge
    assert tuple(rgb[p.top + 17 * p.zoom[0] - 1, c]) == PRED_COLOUR               # and its bottom edge
    assert tuple(rgb[p.pixel(13, 13)]) not in (REF_COLOUR, PRED_COLOUR)           # inside: the image

    # every false-positive (missed) pixel is on the box around C (B) in a panel that crosses it, and each is there
    fp_expected = np.zeros(rgb.shape[:2], bool)
    missed_expected = np.zeros(rgb.shape[:2], bool)
    for q in panels:
        box = {0: ((25, 28), (4, 7), (30, 34), (30, 34)), 1: ((9, 11), (4, 7), (2, 4), (30, 34)),
               2: ((9, 11), (25, 28), (2, 4), (30, 34))}[q.axis]
        c_span, b_span = {0: (range(9, 11), range(2, 4)), 1: (range(25, 28), range(30, 34)),
                          2: (range(4, 7), range(30, 34))}[q.axis]
        if q.index in c_span:
            fp_expected |= box_outline(rgb.shape[:2], q, box[0], box[1])
        if q.index in b_span:
            missed_expected |= box_outline(rgb.shape[:2], q, box[2], box[3])
    assert fp_expected.any() and missed_expected.any()
    assert np.array_equal(colour_mask(rgb, FP_COLOUR), fp_expected)
    assert np.array_equal(colour_mask(rgb, MISSED_COLOUR), missed_expected)
    grey = rgb[..., 0] == rgb[..., 1]
    assert grey.mean() > 0.9                                                       # the rest is the grey image


def test_no_reference_draws_the_prediction_only():
    image, pred, _ = hand_made()
    rgb, _ = qc_montage(image, pred, None, SPACING, display_window(image))
    assert colour_mask(rgb, PRED_COLOUR).any()
    assert not any(colour_mask(rgb, c).any() for c in (REF_COLOUR, FP_COLOUR, MISSED_COLOUR))
    flat, panels = qc_montage(image[5], pred[5], None, SPACING[1:], display_window(image))
    assert len(panels) == 1 and panels[0].size == (SHAPE[1] * panels[0].zoom[0], SHAPE[2] * panels[0].zoom[1])
    assert colour_mask(flat, PRED_COLOUR).any()                                    # a 2D image: one panel


def test_window_follows_the_plan():
    image = np.arange(1000, dtype=np.float32)
    assert display_window(image, "ct", {"percentile_00_5": -100.0, "percentile_99_5": 300.0}) == (-100.0, 300.0)
    lo, hi = display_window(image, "zscore", {"percentile_00_5": -100.0, "percentile_99_5": 300.0})
    assert lo == pytest.approx(4.995) and hi == pytest.approx(994.005)
    assert display_window(np.zeros(10)) == (0.0, 1.0)
    assert plane_names("LPS") == ["axial", "coronal", "sagittal"] and plane_names("PSL") == ["sagittal", "axial",
                                                                                              "coronal"]


def test_png_holds_the_montage_and_the_legend(tmp_path):
    image, pred, ref = hand_made()
    rgb, panels = qc_montage(image, pred, ref, SPACING, display_window(image))
    png = imread(io.BytesIO(montage_png(rgb, panels, "case: Dice 0.8")), format="png")
    px = (png[..., :3] * 255).round().astype(np.uint8)
    assert px.shape[0] > HEAD + rgb.shape[0] and px.shape[1] == max(rgb.shape[1], 430)
    body = px[HEAD:HEAD + rgb.shape[0], :rgb.shape[1]]
    assert np.array_equal(colour_mask(body, FP_COLOUR), colour_mask(rgb, FP_COLOUR))   # boxes placed pixel for pixel
    legend = px[HEAD + rgb.shape[0]:]
    for colour in (REF_COLOUR, PRED_COLOUR, FP_COLOUR, MISSED_COLOUR):
        assert colour_mask(legend, colour).sum() >= 50                                  # a legend swatch per colour
    geo = Geometry(SPACING, (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), SHAPE)
    for name, arr in (("img_0000.nii.gz", image), ("pred.nii.gz", pred), ("ref.nii.gz", ref)):
        write_image(tmp_path / name, arr, geo)
    from_files = case_qc_png(tmp_path / "img_0000.nii.gz", tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz")
    assert imread(io.BytesIO(from_files), format="png").shape == png.shape

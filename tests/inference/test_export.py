"""Export: the real preprocessing path and back gives the input's grid and labels (oblique, RAS/LPS, flipped)."""
from __future__ import annotations

import numpy as np
import pytest

from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import read_image
from xtlunet.dataset.loading import LoadedCase
from xtlunet.errors import XtlunetError
from xtlunet.inference import export_prediction, probabilities_to_labels, revert_preprocessing, write_prediction
from xtlunet.plans import Plans
from xtlunet.preprocessing.case import preprocess_loaded


def _oblique() -> tuple[float, ...]:
    """A rotation about an oblique axis (flattened direction matrix)."""
    a, b = np.deg2rad(17.0), np.deg2rad(-28.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple(float(v) for v in (rz @ rx).ravel())


DIRECTIONS = {
    "LPS": (1.0, 0, 0, 0, 1, 0, 0, 0, 1),
    "RAS": (-1.0, 0, 0, 0, -1, 0, 0, 0, 1),
    "flipped": (1.0, 0, 0, 0, -1, 0, 0, 0, -1),
    "oblique": _oblique(),
}
# original spacing (array order), transpose_forward, target spacing of the configuration (transposed order)
RESAMPLING = {
    "identity": ((0.8, 0.6, 3.0), [2, 0, 1], [3.0, 0.8, 0.6]),
    "anisotropic": ((0.8, 0.6, 3.0), [2, 0, 1], [3.0, 1.1, 0.9]),
    "isotropic": ((1.2, 0.9, 1.0), [1, 2, 0], [0.8, 1.1, 1.0]),
}


def synthetic_case(spacing: tuple[float, ...], direction: tuple[float, ...], shape=(32, 40, 12)) -> LoadedCase:
    """An image (2D or 3D) with a zero border (so cropping bites) and two nested ellipsoid labels, sized in mm."""
    geo = Geometry(tuple(spacing), (12.5, -40.0, 7.25)[:len(shape)], tuple(float(v) for v in direction), shape)
    grid = np.stack(np.meshgrid(*[(np.arange(n) - n / 2 + 1.5) * s for n, s in zip(shape, spacing)], indexing="ij"))
    radii = np.array([10.0, 11.0, 12.0][-len(shape):]).reshape(-1, *[1] * len(shape))
    r = np.sqrt(((grid / radii) ** 2).sum(0))
    seg = np.where(r < 0.5, 2, np.where(r < 1.0, 1, 0)).astype(np.int16)
    body = np.zeros(shape, bool)
    margins = zip((3, 4, 1)[-len(shape):], (2, 3, 1)[-len(shape):], shape)
    body[tuple(slice(b, n - a) for b, a, n in margins)] = True
    rng = np.random.default_rng(0)
    data = np.where(body, 1.0 + rng.random(shape) + seg, 0.0).astype(np.float32)
    seg[~body] = 0
    return LoadedCase("case_000", data[None], geo, seg)


def one_hot(seg: np.ndarray, classes: int = 3) -> np.ndarray:
    """Logits 1 for the label, 0 for the other classes: the label wins the argmax everywhere."""
    return (seg[None] == np.arange(classes).reshape(-1, *[1] * seg.ndim)).astype(np.float32)


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    """Dice of one label."""
    x, y = a == label, b == label
    return 2 * float((x & y).sum()) / float(x.sum() + y.sum())


def preprocess(lc: LoadedCase, plans: Plans) -> tuple[np.ndarray, dict]:
    """The real preprocessing path; returns the preprocessed label map and the case properties."""
    _, seg, props = preprocess_loaded(lc, plans, next(iter(plans.configurations.values())), [], [1, 2])
    return seg, props


def prepared(make_plans, resampling: str, direction: str) -> tuple[LoadedCase, Plans, np.ndarray, dict]:
    """A synthetic case, its plans, and its preprocessed label map and properties."""
    spacing, transpose, target = RESAMPLING[resampling]
    lc = synthetic_case(spacing, DIRECTIONS[direction])
    plans = make_plans(transpose, target, [8, 8, 8])
    return (lc, plans, *preprocess(lc, plans))


@pytest.mark.parametrize("resampling", sorted(RESAMPLING))
@pytest.mark.parametrize("direction", sorted(DIRECTIONS))
def test_round_trip_keeps_geometry_and_labels(tmp_path, make_plans, resampling, direction):
    lc, plans, seg, props = prepared(make_plans, resampling, direction)
    assert props["bbox"] != [[0, s] for s in props["shape_before_crop"]] and props["transpose_forward"] != [0, 1, 2]
    assert props["separate_axis"] == (None if resampling == "isotropic" else 0)
    out = tmp_path / f"case_000{'.mha' if direction == 'flipped' else '.nii.gz'}"
    export_prediction(one_hot(seg), props, plans, out)
    pred, geo = read_image(out)
    assert geo.shape == lc.geometry.shape and geo.mismatch(lc.geometry, rtol=1e-6, atol=1e-5) == []
    assert pred.dtype == np.uint8 and set(np.unique(pred)) <= {0, 1, 2}
    if resampling == "identity":
        assert props["shape_after_resample"] == props["shape_after_crop"] and np.array_equal(pred, lc.seg)
    for label in (1, 2):
        assert dice(pred, lc.seg, label) > 0.95, (label, dice(pred, lc.seg, label))
        shift = np.argwhere(pred == label).mean(0) - np.argwhere(lc.seg == label).mean(0)
        assert np.all(np.abs(shift) < 0.25), shift  # no half-voxel misalignment
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_probabilities_saved_beside_labels(tmp_path, make_plans):
    lc, plans, seg, props = prepared(make_plans, "anisotropic", "RAS")
    returned = export_prediction(one_hot(seg), props, plans, tmp_path / "case_000.nii.gz", save_probabilities=True)
    probs = np.load(tmp_path / "case_000.npz")["probabilities"]
    labels, _ = read_image(tmp_path / "case_000.nii.gz")
    assert probs.dtype == np.float16 and probs.shape == (3, *lc.geometry.shape)
    assert np.allclose(probs.astype(np.float32).sum(0), 1, atol=2e-3)
    assert np.array_equal(np.argmax(probs, 0), labels) and np.array_equal(returned, labels)
    # already reverted probabilities (e.g. for scoring before writing) go straight to write_prediction
    full = revert_preprocessing(one_hot(seg), props, plans)
    again = write_prediction(full, props, plans, tmp_path / "again.mha")
    assert np.array_equal(again, labels) and np.array_equal(read_image(tmp_path / "again.mha")[0], labels)


def test_logits_are_resampled_before_the_softmax(tmp_path, make_plans):
    """nnU-Net's order: interpolating saturated probabilities instead moves the borders of confident structures."""
    from xtlunet.inference.export import revert_channel
    from xtlunet.preprocessing.resample import resample_class_maps

    _, plans, seg, props = prepared(make_plans, "anisotropic", "oblique")
    rng = np.random.default_rng(3)
    logits = (8 * one_hot(seg) + 3 * rng.standard_normal((3, *seg.shape))).astype(np.float32)
    labels = export_prediction(logits, props, plans, tmp_path / "case_000.nii.gz", save_probabilities=True)

    def reverted_argmax(maps: np.ndarray) -> np.ndarray:
        cropped = resample_class_maps(maps, props["shape_after_crop"], props["separate_axis"])
        return revert_channel(np.argmax(cropped, 0).astype(np.uint8), props, plans, 0)

    softmax = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    assert np.array_equal(labels, reverted_argmax(logits))
    assert not np.array_equal(labels, reverted_argmax(softmax))          # the order matters on this case
    probs = np.load(tmp_path / "case_000.npz")["probabilities"].astype(np.float32)
    assert np.allclose(probs.sum(0), 1, atol=2e-3) and np.array_equal(np.argmax(probs, 0), labels)
    assert np.allclose(probs, revert_preprocessing(logits, props, plans), atol=1e-3)


def test_labels_follow_the_declared_values(make_plans):
    plans = make_plans([0, 1], [1.0, 1.0], [8, 8])
    plans.labels = {"background": 0, "vessel": 4, "tumour": 300}
    probs = np.zeros((3, 2, 2), np.float32)
    probs[0, 0, 0] = probs[1, 0, 1] = probs[2, 1, :] = 1
    labels = probabilities_to_labels(probs, plans)
    assert labels.dtype == np.uint16 and labels.tolist() == [[0, 4], [300, 300]]


def test_outside_the_crop_box_is_background(make_plans):
    lc, plans, seg, props = prepared(make_plans, "isotropic", "LPS")
    uniform = np.full((3, *seg.shape), 1 / 3, np.float32)
    full = revert_preprocessing(uniform, props, plans)
    assert full.shape == (3, *lc.geometry.shape)
    inside = (lc.data[0] != 0)
    assert np.allclose(full[:, inside], 1 / 3, atol=1e-5)
    assert np.array_equal(full[:, ~inside], np.repeat([[1.0], [0.0], [0.0]], (~inside).sum(), axis=1))


def test_2d_configuration_of_a_volume_and_a_2d_image(tmp_path, make_plans):
    lc = synthetic_case((3.0, 0.7, 0.9), DIRECTIONS["flipped"], shape=(6, 30, 26))
    plans = make_plans([0, 1, 2], [1.0, 1.0], [8, 8], name="2d")
    seg, props = preprocess(lc, plans)
    assert seg.shape[0] == props["shape_after_crop"][0]  # slices kept, in-plane resampled
    export_prediction(one_hot(seg), props, plans, tmp_path / "vol.nii.gz")
    pred, geo = read_image(tmp_path / "vol.nii.gz")
    assert geo.mismatch(lc.geometry, rtol=1e-6, atol=1e-5) == [] and dice(pred, lc.seg, 1) > 0.95
    image = synthetic_case((0.7, 0.9), (0.0, 1.0, -1.0, 0.0), shape=(30, 26))
    plans2 = make_plans([1, 0], [1.1, 0.8], [8, 8], name="2d")
    seg2, props2 = preprocess(image, plans2)
    export_prediction(one_hot(seg2), props2, plans2, tmp_path / "img.mha")
    pred2, geo2 = read_image(tmp_path / "img.mha")
    assert geo2.mismatch(image.geometry, rtol=1e-6, atol=1e-5) == [] and dice(pred2, image.seg, 1) > 0.95


def test_mismatches_are_refused(make_plans):
    _, plans, seg, props = prepared(make_plans, "identity", "LPS")
    with pytest.raises(XtlunetError, match="shape"):
        revert_preprocessing(one_hot(seg)[:, :-1], props, plans)
    other = make_plans([0, 1, 2], RESAMPLING["identity"][2], [8, 8, 8])
    with pytest.raises(XtlunetError, match="transpose"):
        revert_preprocessing(one_hot(seg), props, other)
    with pytest.raises(XtlunetError, match="labels"):
        export_prediction(one_hot(seg, classes=4), props, plans, "unused.nii.gz")

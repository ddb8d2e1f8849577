"""Fold ensembling: averaging probabilities, and predict_case over several folds' networks."""
import numpy as np
import pytest
import torch

from xtlunet.errors import XtlunetError
from xtlunet.inference import average_predictions, predict_case, predict_sliding_window


def test_average_numpy_torch_and_generators():
    rng = np.random.default_rng(0)
    a, b, c = (rng.random((3, 4, 5)).astype(np.float32) for _ in range(3))
    avg = average_predictions([a, b, c])
    assert isinstance(avg, np.ndarray) and avg.dtype == np.float32 and np.allclose(avg, (a + b + c) / 3)
    assert np.array_equal(a, a.copy()) and np.allclose(average_predictions([a]), a)
    t = average_predictions(torch.from_numpy(p) for p in (a, b))
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.from_numpy((a + b) / 2))
    assert np.allclose(average_predictions([a.astype(np.float16), torch.from_numpy(b)]), (a + b) / 2, atol=1e-3)


def test_average_refuses_nothing_and_mismatched_shapes():
    with pytest.raises(XtlunetError, match="no predictions"):
        average_predictions([])
    with pytest.raises(XtlunetError, match="shapes"):
        average_predictions([np.zeros((3, 4)), np.zeros((3, 5))])


def test_predict_case_averages_folds(make_net, make_plans):
    plans = make_plans([0, 1, 2], [1.0, 1.0, 1.0], [8, 8, 8], channels=2)
    conf = plans.configuration("3d_fullres")
    data = np.random.default_rng(1).normal(size=(2, 10, 12, 9)).astype(np.float32)
    nets = [make_net(3, seed=s) for s in (0, 1)]
    probs = predict_case(nets, data, conf, plans, batch_windows=2, mirror_axes=(1,))
    single = [predict_sliding_window(n, torch.from_numpy(data), conf.patch_size, 3, batch_windows=2, mirror_axes=(1,))
              for n in nets]
    assert isinstance(probs, np.ndarray) and probs.shape == (3, 10, 12, 9)
    assert np.allclose(probs, ((single[0] + single[1]) / 2).numpy(), atol=1e-6)
    assert not np.allclose(single[0].numpy(), single[1].numpy(), atol=1e-3)


def test_predict_case_2d_configuration_on_a_volume(make_net, make_plans):
    plans = make_plans([0, 1, 2], [1.0, 1.0], [8, 8], channels=2, name="2d")
    data = np.random.default_rng(2).normal(size=(2, 3, 12, 9)).astype(np.float32)
    logits = predict_case([make_net(2)], data, plans.configuration("2d"), plans)
    assert logits.shape == (3, 3, 12, 9) and np.isfinite(logits).all() and not np.allclose(logits.sum(0), 1, atol=1e-3)


def test_predict_case_clear_errors(make_net, make_plans):
    plans = make_plans([0, 1, 2], [1.0, 1.0, 1.0], [8, 8, 8], channels=2)
    conf = plans.configuration("3d_fullres")
    with pytest.raises(XtlunetError, match="does not fit"):
        predict_case([make_net(3)], np.zeros((1, 8, 8, 8), np.float32), conf, plans)
    with pytest.raises(XtlunetError, match="no networks"):
        predict_case([], np.zeros((2, 8, 8, 8), np.float32), conf, plans)
    roi = make_plans([0, 1, 2], [1.0, 1.0, 1.0], [8, 8, 8], channels=2, name="3d_roi", task="classification")
    with pytest.raises(XtlunetError, match="segmentation"):
        predict_case([make_net(3)], np.zeros((2, 8, 8, 8), np.float32), roi.configuration("3d_roi"), roi)

"""The training engine's parts: schedules, the one TrainStep (freezing, clipping), RNG state, trainer hooks,
and the import boundaries (the Loop never imports trainers; training imports neither inference nor evaluation)."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from xtlunet.training.checkpoint import rng_state, set_rng_state
from xtlunet.training.optim import apply_schedule, cosine, poly, sgd
from xtlunet.training.step import TrainStep


def test_poly_and_cosine_factors():
    assert poly(0, 100) == 1.0 and poly(100, 100) == 0.0 and poly(150, 100) == 0.0
    assert poly(50, 100) == pytest.approx(0.5 ** 0.9)
    factors = [poly(s, 10) for s in range(11)]
    assert all(a > b for a, b in zip(factors, factors[1:]))
    assert cosine(0, 8) == 1.0 and cosine(4, 8) == pytest.approx(0.5) and cosine(8, 8) == pytest.approx(0.0)


def test_apply_schedule_scales_each_groups_own_initial_lr():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-2}])  # no private keys needed
    top = apply_schedule(opt, poly, 5, 10)
    assert [g["initial_lr"] for g in opt.param_groups] == [1e-3, 1e-2]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3 * 0.5 ** 0.9, 1e-2 * 0.5 ** 0.9])
    assert top == pytest.approx(1e-2 * 0.5 ** 0.9)
    apply_schedule(opt, lambda step, total: 0.25, 7, 10)  # a user's schedule: any callable
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2.5e-4, 2.5e-3])


def _two_layer() -> tuple[nn.Sequential, nn.Module]:
    """A 2-layer net and a squared-error loss."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), nn.MSELoss()


def test_frozen_parameters_keep_their_values_and_get_no_momentum():
    net, loss = _two_layer()
    opt = sgd(net.parameters(), lr=0.1)
    step = TrainStep(net, loss, opt, torch.device("cpu"), grad_clip=12.0, frozen=list(net[0].parameters()))
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    first, second = net[0].weight.detach().clone(), net[1].weight.detach().clone()
    step(x, y, freeze=True)
    assert torch.equal(net[0].weight, first) and not torch.equal(net[1].weight, second)
    assert "momentum_buffer" not in opt.state.get(net[0].weight, {})
    step(x, y, freeze=False)
    assert not torch.equal(net[0].weight, first)


def test_gradient_norm_is_clipped():
    net, loss = _two_layer()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)  # plain SGD: the update is the (clipped) gradient
    before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    TrainStep(net, loss, opt, torch.device("cpu"), grad_clip=0.5)(torch.randn(8, 4) * 100, torch.randn(8, 2) * 100)
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert float((after - before).norm()) == pytest.approx(0.5, rel=1e-4)


def test_rng_state_round_trip():
    state = rng_state()
    first = (torch.rand(3), np.random.rand(3), __import__("random").random())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


TRAINING_MODULES = ("import pkgutil, xtlunet.training as t; "
                    "[__import__(m.name) for m in pkgutil.walk_packages(t.__path__, 'xtlunet.training.')]")


@pytest.mark.parametrize("imports, forbidden", [
    (TRAINING_MODULES, ("xtlunet.trainers", "xtlunet.inference", "xtlunet.evaluation", "xtlunet.validation",
                        "xtlunet.launch")),
    ("import xtlunet.evaluation.compare, xtlunet.evaluation.evaluate_findings",
     ("xtlunet.inference", "xtlunet.training", "torch")),
])
def test_import_boundaries(imports, forbidden):
    code = f"import sys; {imports}; print([m for m in sys.modules if m.startswith({forbidden!r})])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]", f"{imports} pulls in {out}"


def _run(configuration: str):
    """A RunSpec of dataset 501/502 for hooks only."""
    from xtlunet.training.run_spec import RunSpec

    return RunSpec("501" if configuration == "3d_fullres" else "502", configuration, 0, epochs=20)


def test_trainer_hooks_default_to_the_task(prepared_roots, monkeypatch):
    from tests.conftest import use_roots
    from xtlunet.plans import Plans
    from xtlunet.trainers.arms import ScratchTrainer, TLTrainer
    from xtlunet.training.losses import DeepSupervisionLoss

    use_roots(monkeypatch, prepared_roots)
    plans = Plans.load(prepared_roots["preprocessed"] / "Dataset501_BrainMS" / "xtlunetPlans.json")
    scratch = ScratchTrainer.for_plans(_run("3d_fullres"), plans)      # no preprocessed data needed
    net = scratch.build_network()
    assert isinstance(scratch.loss(net), DeepSupervisionLoss) and scratch.schedule() is poly
    assert scratch.frozen_parameters(net) == [] and scratch.augmentation().mirrored(3) == (0, 1, 2)
    opt = scratch.optimizer(net)
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-2]
    n_params = sum(1 for _ in net.parameters())
    assert sum(len(g["params"]) for g in opt.param_groups) == n_params
    tl = TLTrainer.for_plans(_run("3d_fullres"), plans)
    frozen = tl.frozen_parameters(net)
    assert frozen and all(any(p is q for q in net.encoder.parameters()) for p in frozen)
    assert [g["lr"] for g in tl.optimizer(net).param_groups] == pytest.approx([1e-3, 1e-2])
    roi = Plans.load(prepared_roots["preprocessed"] / "Dataset502_Prostate" / "xtlunetPlans.json")
    cls = ScratchTrainer.for_plans(_run("3d_roi"), roi)
    assert isinstance(cls.loss(cls.build_network()), nn.CrossEntropyLoss)


def test_parts_carry_the_hooks(prepared_roots, monkeypatch):
    from tests.conftest import use_roots
    from xtlunet.plans import Plans
    from xtlunet.trainers.arms import TLTrainer

    use_roots(monkeypatch, prepared_roots)
    plans = Plans.load(prepared_roots["preprocessed"] / "Dataset501_BrainMS" / "xtlunetPlans.json")

    class CosineTL(TLTrainer):
        freeze_fraction = 0.25

        def schedule(self):
            return cosine

    parts = CosineTL.for_plans(_run("3d_fullres"), plans).parts([], [])
    assert parts.schedule is cosine and parts.freeze_epochs == 5 and parts.trainer == "CosineTL"
    assert parts.task.mirror_axes == (0, 1, 2) and math.isclose(parts.grad_clip, 12.0)


def test_early_stopping_keeps_the_best_epoch():
    from xtlunet.training.optim import EarlyStopping

    net = nn.Linear(2, 1)
    stop = EarlyStopping(patience=2)
    decisions = []
    for epoch, metric in enumerate([0.5, 0.7, float("nan"), 0.6, 0.9]):
        with torch.no_grad():
            net.weight.fill_(epoch)
        decisions.append(stop.update(epoch, metric, net))
        if decisions[-1]:
            break
    assert decisions == [False, False, False, True] and stop.epoch == 1 and stop.metric == 0.7
    stop.restore(net)
    assert torch.equal(net.weight, torch.full_like(net.weight, 1.0))      # epoch 1's weights
    assert not any(EarlyStopping(None).update(e, 0.1, net) for e in range(50))

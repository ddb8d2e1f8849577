"""The GPU path of prediction and training, run on the CPU: fixed window batches (for torch.compile), memory layout,
pinned copies; each gives the outputs of the plain path, and compiling happens once per run."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from xtlunet.cli import build_parser
from xtlunet.inference.folder import PredictOptions, predict_folder
from xtlunet.inference.sliding_window import (inference_network, is_compiled, network_memory_format, pad_batch,
                                              predict_sliding_window, to_device)
from xtlunet.training.step import device_batches, pin_batch

from tiny_folder_model import CASES, folder_bytes, tiny_folder_model


class ShapeLog(torch.nn.Module):
    """A network that records the shape of every input batch it is given."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.shapes = net, []

    def forward(self, x: torch.Tensor) -> Any:
        """The wrapped network's outputs."""
        self.shapes.append(tuple(x.shape))
        return self.net(x)


def volume(shape: tuple[int, ...], channels: int = 2, seed: int = 0) -> torch.Tensor:
    """Random data (C, *shape) with a zero slab, so 'reuse' has constant windows to run once."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(channels, *shape, generator=g)
    data[:, : shape[0] // 2] = 0.0
    return data


@pytest.mark.parametrize("dim, shape, patch, axes", [
    (3, (22, 30, 28), (8, 16, 16), (0, 2)),     # 3D windows, TTA
    (2, (5, 30, 28), (16, 16), (1,)),           # a 2D net slice by slice over a volume
])
def test_padded_fixed_batch_gives_the_unpadded_outputs(make_net, dim, shape, patch, axes):
    net = ShapeLog(make_net(dim))
    data = volume(shape)
    kwargs = dict(batch_windows=3, mirror_axes=axes, empty_windows="reuse")
    plain = predict_sliding_window(net, data, patch, 3, fixed_batch=False, **kwargs)
    plain_shapes, net.shapes = set(net.shapes), []
    padded = predict_sliding_window(net, data, patch, 3, fixed_batch=True, **kwargs)
    flips = 2 ** len(axes)
    assert len(plain_shapes) > 1 and set(net.shapes) == {(3 * flips, 2, *patch)}   # one shape: one compilation
    assert torch.allclose(padded, plain, atol=1e-5, rtol=0)
    assert torch.equal(padded.argmax(0), plain.argmax(0))


def test_pad_batch_appends_zero_samples():
    x = torch.arange(12.0).reshape(2, 6)
    out = pad_batch(x, 4)
    assert out.shape == (4, 6) and torch.equal(out[:2], x) and not out[2:].any()
    assert pad_batch(x, 2) is x and pad_batch(x, 1) is x


def test_memory_layout_is_read_from_the_weights(make_net):
    net3, net2 = make_net(3), make_net(2)
    assert network_memory_format(net3) == torch.contiguous_format
    assert network_memory_format(net3.to(memory_format=torch.channels_last_3d)) == torch.channels_last_3d
    assert network_memory_format(net2.to(memory_format=torch.channels_last)) == torch.channels_last
    one_channel = make_net(3, in_channels=1)   # a first conv of one input channel is both: the next conv decides
    assert network_memory_format(one_channel.to(memory_format=torch.channels_last_3d)) == torch.channels_last_3d


def test_on_the_cpu_the_network_and_volume_stay_as_they_are(make_net):
    net = make_net(3)
    assert inference_network(net, "cpu", channels_last=True) is net
    assert network_memory_format(net) == torch.contiguous_format and not is_compiled(net)
    t = torch.randn(2, 3, 4)
    assert to_device(t, torch.device("cpu")) is t
    batch = {"data": np.ones((2, 1, 4, 4), np.float32), "seg": np.zeros((2, 1, 4, 4), np.float32)}
    assert pin_batch(batch, torch.device("cpu")) is batch
    stream = iter([batch])
    assert device_batches(stream, torch.device("cpu"), workers=2) is stream


def compile_counter(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Make torch.compile use dynamo with a backend that records the input shape of each graph it compiles (and
    runs it eagerly): fast on a CPU, and it counts compilations."""
    graphs: list[tuple[int, ...]] = []
    real = torch.compile

    def backend(gm: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Callable[..., Any]:
        graphs.append(tuple(inputs[0].shape) if inputs else ())
        return gm.forward

    monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, backend=backend, **kw))
    return graphs


@pytest.fixture
def tiny(tmp_path: Path, make_plans: Callable[..., Any], make_net: Callable[..., Any]):
    """A one-fold untrained 3D model and an input folder of three cases of different sizes."""
    return tiny_folder_model(tmp_path, make_plans, make_net)


def test_compile_traces_once_for_every_case_and_changes_no_label(tiny, tmp_path, monkeypatch):
    torch._dynamo.reset()
    graphs = compile_counter(monkeypatch)
    model, src = tiny
    opts = dict(tta=False, batch_windows=3, overlap=False)
    compiled = predict_folder(src, tmp_path / "compiled", model, PredictOptions(compile=True, **opts))
    assert compiled.written == CASES
    assert len(graphs) == 1 and graphs[0][0] == 3   # three cases of different window counts, one batch shape
    plain = predict_folder(src, tmp_path / "plain", model, PredictOptions(**opts))
    assert plain.written == CASES
    assert folder_bytes(tmp_path / "compiled") == folder_bytes(tmp_path / "plain")


@pytest.mark.slow
def test_inductor_compiled_network_predicts_as_the_eager_one(make_net, monkeypatch):
    """torch.compile with its default backend (inductor, a C++ build on the CPU: about half a minute), with the
    weights frozen into the graph on the CPU."""
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    monkeypatch.setattr(inductor_config, "freezing", False)     # restored after the test
    net = make_net(3, in_channels=1)
    data = volume((20, 36, 30), channels=1)
    eager = predict_sliding_window(net, data, (8, 16, 16), 3, batch_windows=3, mirror_axes=(0,), fixed_batch=True)
    compiled = inference_network(net, "cpu", compile=True)
    assert is_compiled(compiled) and inductor_config.freezing
    out = predict_sliding_window(compiled, data, (8, 16, 16), 3, batch_windows=3, mirror_axes=(0,))
    assert torch.allclose(out, eager, atol=1e-4, rtol=0) and torch.equal(out.argmax(0), eager.argmax(0))


def test_predict_and_train_options_parse():
    parser = build_parser()
    a = parser.parse_args(["predict", "-i", "I", "-o", "O", "-d", "1", "-c", "3d_fullres", "--no-overlap",
                           "--compile", "--no-channels-last"])
    assert (a.no_overlap, a.compile, a.no_channels_last) == (True, True, True)
    a = parser.parse_args(["predict", "-i", "I", "-o", "O", "-d", "1", "-c", "3d_fullres"])
    assert (a.no_overlap, a.compile, a.no_channels_last) == (False, False, False)
    opts = PredictOptions()
    assert (opts.overlap, opts.compile, opts.channels_last) == (True, False, True)
    assert parser.parse_args(["train", "1", "3d_fullres", "0", "--compile"]).compile

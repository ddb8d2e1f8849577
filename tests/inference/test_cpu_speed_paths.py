"""CPU speed paths of prediction: bf16 autocast, empty windows, a subset of TTA axes, memory-aware batching, and the
per-class float16 export — each either exact or within a stated tolerance of the plain fp32 path."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from xtlunet.cli import build_parser
from xtlunet.dataset.geometry import Geometry
from xtlunet.dataset.io import read_image, write_image
from xtlunet.dataset.loading import LoadedCase
from xtlunet.dataset.spec import DatasetSpec
from xtlunet.errors import XtlunetError
from xtlunet.inference import export_prediction, predict_case, predict_sliding_window
from xtlunet.inference import predict as predict_module
from xtlunet.inference.export import probabilities_path, probabilities_to_labels, revert_preprocessing
from xtlunet.inference.folder import PredictOptions, predict_folder
from xtlunet.inference.mirroring import tta_mirror_axes
from xtlunet.inference.sliding_window import window_count
from xtlunet.inference.models import TrainedModel
from xtlunet.preprocessing.case import preprocess_loaded
from xtlunet.utils import device as device_module
from xtlunet.utils.device import cpu_bf16_flag, resolve_precision

BF16_PROB_TOLERANCE = 0.02      # max |p_bf16 − p_fp32| of any class at any voxel
BF16_ARGMAX_AGREEMENT = 0.995   # share of voxels whose argmax class is the same


def count_samples(net: torch.nn.Module) -> list[int]:
    """A list that grows by the batch size of every forward pass of `net` (windows × flips)."""
    seen: list[int] = []
    net.register_forward_hook(lambda _m, inputs, _o: seen.append(int(inputs[0].shape[0])))
    return seen


# ---- precision --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, found", [
    ("flags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n", "avx512_bf16"),
    ("flags\t\t: fpu amx_tile amx_bf16 amx_int8\n", "amx_bf16"),
    ("flags\t\t: fpu sse avx2 avx512f\n", None),
])
def test_cpu_bf16_flag_reads_proc_cpuinfo(tmp_path, monkeypatch, text, found):
    (tmp_path / "cpuinfo").write_text(text)
    monkeypatch.setattr(device_module, "CPUINFO", tmp_path / "cpuinfo")
    assert cpu_bf16_flag() == found
    precision = resolve_precision("auto", "cpu")
    assert precision.dtype == (torch.bfloat16 if found else None)
    assert precision.reason == (f"bf16 autocast on the CPU (--precision auto: it has {found})" if found else
                                "fp32 on the CPU (--precision auto: no native bf16, none of amx_bf16, avx512_bf16 in "
                                "/proc/cpuinfo)")
    forced = resolve_precision("bf16", "cpu")
    assert forced.name == "bf16" and ("emulated" in forced.reason) == (found is None)
    assert resolve_precision("fp32", "cpu").dtype is None


def test_cpu_bf16_flag_without_proc_cpuinfo_asks_torch(tmp_path, monkeypatch):
    monkeypatch.setattr(device_module, "CPUINFO", tmp_path / "missing")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert cpu_bf16_flag() is None
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512_AMX")
    assert cpu_bf16_flag() == "AVX512_AMX"


def test_unknown_precision_is_refused_with_a_hint():
    with pytest.raises(XtlunetError, match="unknown precision 'bf61'.*bf16"):
        resolve_precision("bf61", "cpu")


@pytest.mark.skipif(cpu_bf16_flag() is None, reason="this CPU has no native bf16 (amx_bf16/avx512_bf16): "
                    "bf16 would be emulated, auto uses fp32")
def test_bf16_probabilities_agree_with_fp32(make_net):
    net = make_net(3)
    x = torch.randn(2, 16, 24, 24, generator=torch.Generator().manual_seed(1))
    run = dict(patch_size=(8, 16, 16), num_outputs=3, mirror_axes=(1, 2))
    fp32 = predict_sliding_window(net, x, precision=resolve_precision("fp32", "cpu"), **run).softmax(0)
    bf16 = predict_sliding_window(net, x, precision=resolve_precision("bf16", "cpu"), **run)
    assert bf16.dtype == torch.float32   # logits accumulated in fp32
    bf16 = bf16.softmax(0)
    assert 0 < float((bf16 - fp32).abs().max()) <= BF16_PROB_TOLERANCE          # bf16 did run, and stays close
    assert float((bf16.argmax(0) == fp32.argmax(0)).float().mean()) >= BF16_ARGMAX_AGREEMENT


# ---- empty windows ----------------------------------------------------------------------------------------------

def striped_volume() -> torch.Tensor:
    """(1, 8, 16, 64): four side-by-side 16-wide windows at step 1.0, the second and fourth all zero."""
    x = torch.rand(1, 8, 16, 64, generator=torch.Generator().manual_seed(5)) + 0.5
    x[..., 16:32] = 0
    x[..., 48:] = 0
    return x


def test_empty_windows_reuse_is_exact_and_skip_gives_background(make_net):
    net = make_net(3, in_channels=1)
    passes = count_samples(net)
    run = dict(patch_size=(8, 16, 16), num_outputs=3, step=1.0, mirror_axes=(2,))
    out = {}
    for mode in ("run", "reuse", "skip"):
        passes.clear()
        out[mode] = predict_sliding_window(net, striped_volume(), empty_windows=mode, **run)
        out[mode + " passes"] = sum(passes)
    assert (out["run passes"], out["reuse passes"], out["skip passes"]) == (4 * 2, 3 * 2, 2 * 2)
    assert window_count((8, 16, 64), (8, 16, 16), 1.0) == 4 and window_count((5, 16, 20), (16, 12), 0.5) == 5 * 3
    assert torch.allclose(out["reuse"], out["run"], rtol=0, atol=1e-6)   # bitwise here; a batch size may round
    assert torch.equal(out["reuse"].argmax(0), out["run"].argmax(0))
    body = [slice(0, 16), slice(32, 48)]
    for s in body:
        assert torch.allclose(out["skip"][..., s], out["run"][..., s], rtol=0, atol=1e-6)
    skipped = out["skip"].softmax(0)
    for s in (slice(16, 32), slice(48, 64)):
        assert bool((skipped[0, ..., s] == 1).all()) and bool((skipped[1:, ..., s] < 1e-20).all())
        assert float(out["run"].softmax(0)[0, ..., s].max()) < 1         # the net itself does not say 1 there


def test_skip_counts_resampling_ringing_as_zero_but_not_the_body(make_net):
    net = make_net(3, in_channels=1)
    passes = count_samples(net)
    x = striped_volume()
    x[..., 16:32] = 1e-4                      # ringing of a resampled zero background: still outside the body
    x[..., 48:] = 1e-4
    x[0, 0, 0, 50] = 0.5                      # one body voxel: this window must run
    predict_sliding_window(net, x, (8, 16, 16), 3, step=1.0, empty_windows="skip")
    assert sum(passes) == 3


def body_case(shape=(16, 24, 32), spacing=(1.0, 1.0, 1.0), direction=(1.0, 0, 0, 0, 1, 0, 0, 0, 1)) -> LoadedCase:
    """A 1-channel case whose body is two blocks in opposite corners: its crop box holds large all-zero regions."""
    rng = np.random.default_rng(3)
    data = np.zeros(shape, np.float32)
    block = tuple(n * 2 // 5 for n in shape)
    data[tuple(slice(0, b) for b in block)] = 1 + rng.random(block)
    data[tuple(slice(n - b, n) for n, b in zip(shape, block))] = 2 + rng.random(block)
    geo = Geometry(tuple(spacing), (1.0, -2.0, 3.0), tuple(direction), shape)
    return LoadedCase("case_000", data[None], geo, np.zeros(shape, np.int16))


def test_reuse_on_a_zero_background_case_exports_identical_labels_with_fewer_passes(make_net, make_plans, tmp_path):
    plans = make_plans([0, 1, 2], [1.0, 1.0, 1.0], [8, 16, 16])       # use_mask_for_norm: zero outside the body
    conf = plans.configuration("3d_fullres")
    data, _, props = preprocess_loaded(body_case(), plans, conf, [], [])
    net = make_net(3, in_channels=1)
    passes = count_samples(net)
    labels, probs, counts = {}, {}, {}
    for mode in ("run", "reuse"):
        passes.clear()
        probs[mode] = predict_case([net], data, conf, plans, batch_windows=3, mirror_axes=(1, 2),
                                   empty_windows=mode)
        counts[mode] = sum(passes)
        labels[mode] = export_prediction(probs[mode], props, plans, tmp_path / f"{mode}.nii.gz")
    assert counts["reuse"] < counts["run"] and counts["run"] % 4 == 0 and counts["reuse"] % 4 == 0
    assert np.array_equal(labels["reuse"], labels["run"]) and len(np.unique(labels["run"])) > 1
    assert np.allclose(probs["reuse"], probs["run"], atol=1e-6)
    written = [read_image(tmp_path / f"{mode}.nii.gz")[0] for mode in ("run", "reuse")]
    assert np.array_equal(*written) and np.array_equal(written[0], labels["run"])


def test_skip_needs_a_plan_that_normalises_inside_the_body_mask(make_net, make_plans):
    plans = make_plans([0, 1, 2], [1.0, 1.0, 1.0], [8, 8, 8])
    conf = dataclasses.replace(plans.configuration("3d_fullres"), use_mask_for_norm=[False])
    plans = dataclasses.replace(plans, configurations={"3d_fullres": conf})
    with pytest.raises(XtlunetError, match="skip needs every channel normalised inside the body mask.*channel 0"):
        predict_case([make_net(3, in_channels=1)], np.zeros((1, 8, 8, 8), np.float32), conf, plans,
                     empty_windows="skip")
    with pytest.raises(XtlunetError, match="unknown empty-windows mode 'skp'"):
        predict_case([make_net(3, in_channels=1)], np.zeros((1, 8, 8, 8), np.float32), conf, plans,
                     empty_windows="skp")


# ---- TTA axes -----------------------------------------------------------------------------------------------------

def test_tta_axes_choose_a_subset_of_the_trained_axes():
    assert tta_mirror_axes([0, 1, 2]) == (0, 1, 2) and tta_mirror_axes([0, 1, 2], tta=False) == ()
    assert tta_mirror_axes([0, 1, 2], True, [2, 1, 2]) == (1, 2)
    with pytest.raises(XtlunetError, match=r"--tta-axes 0 1 includes axis 0, which training did not mirror "
                                           r"\(mirrored axes: 1 2\).*choose from 1 2"):
        tta_mirror_axes([1, 2], True, [0, 1])
    with pytest.raises(XtlunetError, match="trained without mirroring"):
        tta_mirror_axes([], True, [0])
    with pytest.raises(XtlunetError, match="--no-tta and --tta-axes 1 contradict"):
        tta_mirror_axes([1, 2], False, [1])


def test_cli_parses_the_speed_options():
    base = ["predict", "-i", "in", "-o", "out", "-d", "1", "-c", "3d_fullres"]
    a = build_parser().parse_args(base)
    assert (a.precision, a.tta_axes, a.empty_windows, a.batch_windows) == ("auto", None, "reuse", None)
    a = build_parser().parse_args([*base, "--tta-axes", "1", "2", "--precision", "fp32", "--empty-windows", "skip",
                                   "--batch-windows", "2"])
    assert (a.precision, a.tta_axes, a.empty_windows, a.batch_windows) == ("fp32", [1, 2], "skip", 2)


def tiny_model(make_net, make_plans, folder: Path) -> TrainedModel:
    """A one-fold model of the tiny net, trained (so to say) with mirror axes 1 and 2."""
    plans = make_plans([0, 1, 2], [1.0, 1.0, 1.0], [8, 16, 16])
    spec = DatasetSpec(folder, {0: "ch0"}, dict(plans.labels), 0, ".nii.gz")
    return TrainedModel(folder, plans, plans.configuration("3d_fullres"), spec, [make_net(3, in_channels=1)], ["0"],
                        [1, 2])


def test_predict_folder_uses_the_options(make_net, make_plans, tmp_path, caplog):
    case = body_case((12, 20, 24))
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write_image(src / "case_000_0000.nii.gz", case.data[0], case.geometry)
    model = tiny_model(make_net, make_plans, tmp_path / "model")
    passes = count_samples(model.nets[0])
    with pytest.raises(XtlunetError, match="includes axis 0, which training did not mirror"):
        predict_folder(src, out, model, PredictOptions(tta_axes=(0, 1)))
    assert not out.exists()                                               # refused before anything is written
    with caplog.at_level(logging.INFO, logger="xtlunet"):
        res = predict_folder(src, out, model, PredictOptions(tta_axes=(2,), precision="fp32", empty_windows="run",
                                                             batch_windows=1))
    assert res.written == ["case_000"] and (out / "case_000.nii.gz").is_file()
    assert "precision: fp32 (--precision fp32); outputs are averaged in fp32" in caplog.text
    assert set(passes) == {2}                                             # 1 window × 2 flips (axis 2) per pass


# ---- memory-aware batch -----------------------------------------------------------------------------------------

def test_available_memory_reads_meminfo(tmp_path, monkeypatch):
    (tmp_path / "meminfo").write_text("MemTotal:       16384 kB\nMemAvailable:    2048 kB\n")
    monkeypatch.setattr(device_module, "MEMINFO", tmp_path / "meminfo")
    assert device_module.available_memory_bytes("cpu") == 2048 * 1024
    monkeypatch.setattr(device_module, "MEMINFO", tmp_path / "missing")
    assert device_module.available_memory_bytes("cpu") is None


@pytest.mark.parametrize("free, windows, flips, expected", [
    (2 ** 40, 100, 8, predict_module.MAX_AUTO_BATCH),   # plenty of memory: capped
    (2 ** 40, 3, 8, 3),                                 # never more windows than the case has
    (1, 100, 8, 1),                                     # nothing free: still one window
    (None, 100, 8, predict_module.FALLBACK_BATCH),      # unreadable: the old default
    (None, 2, 8, 2),
])
def test_auto_batch_windows(make_plans, monkeypatch, free, windows, flips, expected):
    monkeypatch.setattr(predict_module, "available_memory_bytes", lambda device: free)
    conf = make_plans([0, 1, 2], [1.0, 1.0, 1.0], [8, 16, 16]).configuration("3d_fullres")
    assert predict_module.auto_batch_windows(conf, windows, flips, "cpu") == expected


def test_auto_batch_fits_the_free_memory(make_plans, monkeypatch):
    conf = make_plans([0, 1, 2], [1.0, 1.0, 1.0], [8, 16, 16]).configuration("3d_fullres")
    monkeypatch.setattr(predict_module, "available_memory_bytes", lambda device: 2 ** 40)
    layers, logits = predict_module.estimate_activation_elements(conf.network(), conf.patch_size, 3)
    per_window = 8 * (4 * layers + 4 * logits)
    monkeypatch.setattr(predict_module, "available_memory_bytes", lambda device: int(3.5 * per_window / 0.25))
    assert predict_module.auto_batch_windows(conf, 100, 8, "cpu") == 3
    bf16 = resolve_precision("bf16", "cpu")                              # 2-byte activations: more windows fit
    assert predict_module.auto_batch_windows(conf, 100, 8, "cpu", bf16) > 3


# ---- per-class float16 export -----------------------------------------------------------------------------------

@pytest.mark.parametrize("reorient", [False, True])
def test_per_class_export_equals_the_full_fp32_path(make_plans, tmp_path, reorient):
    plans = make_plans([2, 0, 1], [2.5, 0.9, 0.7], [8, 8, 8])             # transposed, anisotropic resampling
    plans = dataclasses.replace(plans, labels={"background": 0, "a": 1, "b": 2, "c": 4})
    conf = dataclasses.replace(plans.configuration("3d_fullres"), num_outputs=4)
    plans = dataclasses.replace(plans, configurations={"3d_fullres": conf}, reorient=reorient)
    case = body_case((20, 18, 10), (0.8, 0.6, 2.0), (-1.0, 0, 0, 0, 1, 0, 0, 0, -1))
    _, _, props = preprocess_loaded(case, plans, conf, [], [])
    logits = np.random.default_rng(1).normal(size=(4, *props["shape_after_resample"])).astype(np.float32) * 3
    probs = np.exp(logits) / np.exp(logits).sum(0)
    full = revert_preprocessing(probs, props, plans)                       # the old path: every class in fp32
    labels = export_prediction(probs, props, plans, tmp_path / "case.nii.gz", save_probabilities=True)
    assert np.array_equal(labels, probabilities_to_labels(full, plans)) and set(np.unique(labels)) == {0, 1, 2, 4}
    saved = np.load(probabilities_path(tmp_path / "case.nii.gz"))["probabilities"]
    assert saved.dtype == np.float16 and saved.shape == full.shape == (4, 20, 18, 10)
    assert np.array_equal(saved, full.astype(np.float16))
    assert np.allclose(saved, full, atol=1e-3)                             # float16 tolerance of probabilities

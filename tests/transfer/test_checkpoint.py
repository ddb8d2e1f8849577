"""Checkpoint reading: weights_only loading, accepted layouts, and one-line errors naming the file."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from xtlunet.errors import XtlunetError
from xtlunet.transfer import load_checkpoint_state


class Custom:
    """A pickled custom object that weights_only loading refuses."""


STATE = {"encoder.stages.0.blocks.0.conv.weight": torch.ones(2, 1, 3, 3)}


@pytest.mark.parametrize("layout", ["bare", "state_dict", "network_weights", "model"])
def test_accepted_layouts(tmp_path: Path, layout: str) -> None:
    obj = STATE if layout == "bare" else {layout: STATE, "epoch": 3}
    torch.save(obj, tmp_path / "c.pth")
    state, meta = load_checkpoint_state(tmp_path / "c.pth")
    assert list(state) == list(STATE) and torch.equal(state[list(STATE)[0]], STATE[list(STATE)[0]])
    assert meta == ({} if layout == "bare" else {"epoch": 3})


def test_pretrain_2d_format_returns_meta(tmp_path: Path) -> None:
    arch = {"family": "plain", "dim": 2, "in_channels": 1}
    torch.save({"format_version": 1, "state_dict": STATE, "architecture": arch,
                "normalization": {"scheme": "zscore"}, "provenance": {"dataset": "Dataset900_Mammo"}},
               tmp_path / "p.pth")
    state, meta = load_checkpoint_state(str(tmp_path / "p.pth"))
    assert list(state) == list(STATE)
    assert meta == {"format_version": 1, "architecture": arch, "normalization": {"scheme": "zscore"},
                    "provenance": {"dataset": "Dataset900_Mammo"}}


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    torch.save({"format_version": 2, "state_dict": STATE}, tmp_path / "p.pth")
    with pytest.raises(XtlunetError, match="format_version 2"):
        load_checkpoint_state(tmp_path / "p.pth")


def test_pickled_custom_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": STATE, "trainer": Custom()}, path)
    with pytest.raises(XtlunetError) as info:
        load_checkpoint_state(path)
    msg = str(info.value)
    assert "pickled Python objects" in msg and "Custom" in msg and str(path) in msg
    assert "fix: re-save" in msg and "\n" not in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(XtlunetError, match=r"checkpoint not found \[.*nope\.pth\] — fix"):
        load_checkpoint_state(tmp_path / "nope.pth")


@pytest.mark.parametrize("content", [os.urandom(512), b"hello, not a checkpoint", b""])
def test_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(XtlunetError, match=r"not a PyTorch checkpoint .*junk\.pth\] — fix: pass a file written by"):
        load_checkpoint_state(path)


@pytest.mark.parametrize("obj,match", [([1, 2], "holds a list"), ({"epoch": 1}, "no state dict in checkpoint"),
                                       ({"state_dict": {}}, "no state dict")])
def test_no_state_dict(tmp_path: Path, obj: object, match: str) -> None:
    torch.save(obj, tmp_path / "c.pth")
    with pytest.raises(XtlunetError, match=match):
        load_checkpoint_state(tmp_path / "c.pth")

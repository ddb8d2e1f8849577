"""Shared fixtures: data roots in a temp folder and small built-in example datasets."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """XTLUNET_raw / _preprocessed / _results under tmp_path (nnUNet_* unset)."""
    out = {}
    for kind in ("raw", "preprocessed", "results"):
        path = tmp_path / kind
        path.mkdir()
        monkeypatch.setenv(f"XTLUNET_{kind}", str(path))
        monkeypatch.delenv(f"nnUNet_{kind}", raising=False)
        out[kind] = path
    return out


@pytest.fixture(scope="session")
def example_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A raw root holding small versions of the three examples, written once per session."""
    from xtlunet.dataset.examples import make_example

    raw = tmp_path_factory.mktemp("examples_raw")
    make_example("brain-ms", raw, cases=5, seed=0)
    make_example("prostate", raw, cases=10, seed=0)
    make_example("mammo", raw, cases=16, seed=0)
    return raw


@pytest.fixture
def examples(roots: dict[str, Path], example_cache: Path) -> dict[str, Path]:
    """The cached examples copied into this test's raw root."""
    import shutil

    for d in example_cache.iterdir():
        shutil.copytree(d, roots["raw"] / d.name)
    return roots


TINY_GB = "0.04"


@pytest.fixture(scope="session")
def prepared_roots(tmp_path_factory: pytest.TempPathFactory, example_cache: Path) -> dict[str, Path]:
    """Raw + preprocessed roots with all three examples planned (tiny budget) once per session."""
    import shutil

    from xtlunet.cli import main

    base = tmp_path_factory.mktemp("prepared")
    roots = {k: base / k for k in ("raw", "preprocessed")}
    for d in example_cache.iterdir():
        shutil.copytree(d, roots["raw"] / d.name)
    mp = pytest.MonkeyPatch()
    mp.setenv("XTLUNET_raw", str(roots["raw"]))
    mp.setenv("XTLUNET_preprocessed", str(roots["preprocessed"]))
    try:
        for argv in (["-d", "501", "-c", "3d_fullres"], ["-d", "502", "-c", "3d_roi"], ["-d", "503", "-c", "2d"]):
            assert main(["-q", "plan-and-preprocess", *argv, "--gpu-memory-gb", TINY_GB]) == 0
        # resnet18's 33M 3D parameters alone need ~0.55 GB with optimiser state
        assert main(["-q", "plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "--pretrained", "resnet18",
                     "--gpu-memory-gb", "0.69"]) == 0
    finally:
        mp.undo()
    return roots


def use_roots(mp: pytest.MonkeyPatch, roots: dict[str, Path]) -> None:
    """Point XTLUNET_* at roots (nnUNet_* unset) and run augmentation in-process."""
    for kind, path in roots.items():
        mp.setenv(f"XTLUNET_{kind}", str(path))
        mp.delenv(f"nnUNet_{kind}", raising=False)
    mp.setenv("XTLUNET_n_proc_DA", "0")


@pytest.fixture
def trained_roots(prepared_roots: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The prepared raw/preprocessed roots and a fresh results root for this test."""
    roots = dict(prepared_roots, results=tmp_path / "results")
    use_roots(monkeypatch, roots)
    return roots

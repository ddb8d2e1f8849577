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

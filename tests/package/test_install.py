"""The package installs (non-editably and editably) and exposes the top-level planners/ and trainers/ folders as
xtlunet.planners/xtlunet.trainers through setup.py's package_dir only: nothing else beside xtlunet/ (tests/, setup.py)
becomes importable as xtlunet.<name>."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_IGNORE = (".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", "*.pyc", "xtlunet_demo", "benchmarks",
           ".pytest_cache")

# Run in a fresh interpreter: report where modules came from and which names fail to import.
_PROBE = """
import importlib, json, sys
found, missing = {}, {}
for name in sys.argv[1:]:
    try:
        found[name] = importlib.import_module(name).__file__
    except ModuleNotFoundError as exc:
        missing[name] = exc.name
    except BaseException as exc:  # it was found, but running it failed (xtlunet.setup runs setup())
        found[name] = f"<found; importing raised {type(exc).__name__}>"
print(json.dumps({"found": found, "missing": missing}))
"""
_WANTED = ["xtlunet", "xtlunet.planners.default", "xtlunet.trainers.arms", "xtlunet.trainers._pkgcheck.mod"]
_UNWANTED = ["xtlunet.tests", "xtlunet.setup"]


def _copy_repo(dest: Path, with_tests: bool) -> Path:
    """A copy of the repository plus a nested trainers subpackage (package_dir must map subpackages too)."""
    ignore = _IGNORE if with_tests else _IGNORE + ("tests",)
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(*ignore))
    sub = dest / "trainers" / "_pkgcheck"
    sub.mkdir()
    (sub / "__init__.py").write_text("")
    (sub / "mod.py").write_text("VALUE = 1\n")
    return dest


def _probe(python: str, cwd: Path, env: dict) -> dict:
    out = subprocess.run([python, "-c", _PROBE, *_WANTED, *_UNWANTED], check=True, cwd=cwd, env=env,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1", **extra)
    return env


def _assert_layout(result: dict, root: Path) -> None:
    found, missing = result["found"], result["missing"]
    assert set(found) == set(_WANTED), result
    assert Path(found["xtlunet"]) == root / "xtlunet" / "__init__.py"
    assert Path(found["xtlunet.planners.default"]) == root / "planners" / "default.py"
    assert Path(found["xtlunet.trainers.arms"]) == root / "trainers" / "arms.py"
    assert Path(found["xtlunet.trainers._pkgcheck.mod"]) == root / "trainers" / "_pkgcheck" / "mod.py"
    assert set(missing) == set(_UNWANTED), f"importable beside xtlunet: {sorted(set(_UNWANTED) - set(missing))}"


def test_non_editable_install_imports_planners_and_trainers(tmp_path):
    src = _copy_repo(tmp_path / "src", with_tests=False)
    (src / "tests").mkdir()  # a tests/ folder beside the package must not become xtlunet.tests
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-compile",
                    "--target", str(target), str(src)], check=True, cwd=tmp_path, env=_clean_env())
    assert (target / "xtlunet" / "planners" / "default.py").is_file()
    assert (target / "xtlunet" / "trainers" / "__init__.py").is_file()
    assert (target / "xtlunet" / "trainers" / "_pkgcheck" / "mod.py").is_file()
    assert not (target / "planners").exists() and not (target / "trainers").exists()
    assert not (target / "tests").exists() and not (target / "setup.py").exists()
    code = ("import xtlunet, xtlunet.planners.default, xtlunet.trainers; "
            "print(xtlunet.__file__); print(xtlunet.planners.default.DefaultPlanner.__name__)")
    env = _clean_env(PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env,
                         capture_output=True, text=True).stdout.split()
    assert out[0].startswith(str(target)) and out[1] == "DefaultPlanner"
    result = _probe(sys.executable, tmp_path, env)
    found, missing = result["found"], result["missing"]
    assert set(found) == set(_WANTED), result
    assert Path(found["xtlunet.trainers.arms"]) == target / "xtlunet" / "trainers" / "arms.py"
    assert Path(found["xtlunet.trainers._pkgcheck.mod"]) == target / "xtlunet" / "trainers" / "_pkgcheck" / "mod.py"
    assert Path(found["xtlunet.planners.default"]) == target / "xtlunet" / "planners" / "default.py"
    assert set(missing) == set(_UNWANTED), result
    scripts = list((target / "bin").glob("xtlunet")) if (target / "bin").exists() else []
    assert scripts, "console script 'xtlunet' was not installed"


def test_editable_install_maps_planners_and_trainers_to_top_level_folders(tmp_path):
    # Dependencies (torch, numpy, setuptools, pip, ...) come from the environment running the tests; the venv only
    # holds the editable install. Plain path lines in a .pth do not run that environment's own .pth files, so its
    # editable finder for the checked-out repository stays out.
    outer = [p for p in dict.fromkeys(sys.path) if p and Path(p).is_dir() and Path(p).name in ("site-packages",
                                                                                               "dist-packages")]
    if any((Path(p) / "xtlunet" / "__init__.py").is_file() for p in outer):
        pytest.skip("a non-editable xtlunet in the test environment would shadow the editable one (PathFinder first)")
    src = _copy_repo(tmp_path / "src", with_tests=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=_clean_env())
    python = str(venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, env=_clean_env()).stdout.strip()
    Path(purelib, "zz_outer_env.pth").write_text("".join(f"{p}\n" for p in outer))
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-compile",
                    "-e", str(src)], check=True, cwd=tmp_path, env=_clean_env())
    assert not list(Path(purelib).glob("xtlunet/**/*.py")), "editable install copied the package"
    # Outside the checkout: only the installed editable finder can supply the package.
    _assert_layout(_probe(python, tmp_path, _clean_env()), src)
    # In the checkout's root, as `python -m pytest` runs (cwd first on sys.path): xtlunet comes from ./xtlunet and
    # xtlunet.trainers/planners still resolve through the editable finder.
    _assert_layout(_probe(python, src, _clean_env()), src)

"""The package installs non-editably and exposes planners/trainers as xtlunet.planners/xtlunet.trainers."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_non_editable_install_imports_planners_and_trainers(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "tests", "*.egg-info", "build",
                                                             "__pycache__", "xtlunet_demo", "benchmarks"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-compile",
                    "--target", str(target), str(src)], check=True, cwd=tmp_path)
    assert (target / "xtlunet" / "planners" / "default.py").is_file()
    assert (target / "xtlunet" / "trainers" / "__init__.py").is_file()
    assert not (target / "planners").exists() and not (target / "trainers").exists()
    code = ("import xtlunet, xtlunet.planners.default, xtlunet.trainers; "
            "print(xtlunet.__file__); print(xtlunet.planners.default.DefaultPlanner.__name__)")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env,
                         capture_output=True, text=True).stdout.split()
    assert out[0].startswith(str(target)) and out[1] == "DefaultPlanner"
    scripts = list((target / "bin").glob("xtlunet")) if (target / "bin").exists() else []
    assert scripts, "console script 'xtlunet' was not installed"

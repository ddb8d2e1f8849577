"""xtlunet: self-configuring 3D segmentation and lesion classification with cross-organ transfer learning."""
from pathlib import Path

from setuptools import find_packages, setup

engine = find_packages(include=["xtlunet", "xtlunet.*"])
# The repository's top-level planners/ and trainers/ folders install as xtlunet.planners / xtlunet.trainers (and
# their subpackages as xtlunet.planners.<sub> ...): package_dir is the only thing that maps them, nothing at import
# time. A non-editable install copies them under xtlunet/. An editable install (pip install -e, PEP 660, setuptools'
# default "lenient" mode) sees a package_dir that is not a plain layout and installs a meta-path finder mapping
# xtlunet -> ./xtlunet, xtlunet.planners -> ./planners, xtlunet.trainers -> ./trainers (deeper modules resolve
# through those packages' __path__). Do not use editable_mode=compat: it only puts the repository root on sys.path.
extra = {"xtlunet.planners": "planners", "xtlunet.trainers": "trainers"}
for folder in ("planners", "trainers"):
    for sub in find_packages(where=folder):
        extra[f"xtlunet.{folder}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(
    name="xtlunet",
    version="0.1.0",
    description=__doc__,
    long_description=Path("README.md").read_text() if Path("README.md").exists() else __doc__,
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=engine + sorted(extra),
    package_dir=extra,
    include_package_data=True,
    install_requires=[
        "torch>=2.4,<2.15",  # torch.amp.GradScaler("cuda") needs 2.3; 2.4 is the first built for NumPy 2 as well
        "batchgenerators>=0.25.3",  # MultiThreadedAugmenter._finish(timeout, force) (training/tasks/common.py)
        "SimpleITK>=2.2",
        "nibabel>=5.0",
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.6",  # GroupKFold(shuffle=True, random_state=...) (training/splits.py)
        "tqdm>=4.60",
        "matplotlib>=3.6",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ["xtlunet=xtlunet.cli:main"]},
)

"""xtlunet: self-configuring 3D segmentation and lesion classification with cross-organ transfer learning."""
from pathlib import Path

from setuptools import find_packages, setup

engine = find_packages(include=["xtlunet", "xtlunet.*"])
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
        "torch>=2.1,<2.15",
        "batchgenerators>=0.25",
        "SimpleITK>=2.2",
        "nibabel>=5.0",
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.2",
        "tqdm>=4.60",
        "matplotlib>=3.6",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ["xtlunet=xtlunet.cli:main"]},
)

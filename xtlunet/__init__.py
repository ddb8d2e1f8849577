"""xtlunet: self-configuring 3D medical image segmentation and lesion classification with
cross-organ, cross-modality transfer learning (2D mammogram weights carried into 3D networks)."""
from __future__ import annotations

__version__ = "0.1.0"

# xtlunet.planners and xtlunet.trainers live in the repository's top-level planners/ and trainers/
# folders; setup.py's package_dir maps them there (installed copies, or the editable finder).

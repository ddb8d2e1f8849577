"""xtlunet: self-configuring 3D medical image segmentation and lesion classification with
cross-organ, cross-modality transfer learning (2D mammogram weights carried into 3D networks)."""
from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# In a source checkout, planners/ and trainers/ sit beside this package and install as
# xtlunet.planners / xtlunet.trainers; make them importable under those names here too.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "setup.py")) and _os.path.isdir(_os.path.join(_root, "planners")):
    if _root not in __path__:
        __path__.append(_root)

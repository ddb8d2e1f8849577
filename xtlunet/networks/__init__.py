"""Networks built from an ArchitectureDescription, in 2D and 3D with the same parameter names.

Names are loaded on first use, so importing the description (plans, CLI) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "build_network": "build", "count_parameters": "build", "parameter_groups": "build",
    "ArchitectureDescription": "description", "FAMILIES": "description", "family_description": "description",
    "Encoder": "encoder", "build_encoder": "encoder", "estimate_memory_bytes": "memory",
    "ClassificationNet": "nets", "SegmentationNet": "nets",
    "KeyMapping": "torchvision_keys", "torchvision_to_xtlunet": "torchvision_keys",
    "xtlunet_to_torchvision": "torchvision_keys",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import the submodule that defines `name` on first access."""
    if name not in _WHERE:
        raise AttributeError(f"module 'xtlunet.networks' has no attribute '{name}'")
    return getattr(importlib.import_module(f"xtlunet.networks.{_WHERE[name]}"), name)

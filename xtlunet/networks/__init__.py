"""Networks built from an ArchitectureDescription, in 2D and 3D with the same parameter names."""
from xtlunet.networks.build import build_network, count_parameters, parameter_groups
from xtlunet.networks.description import ArchitectureDescription, FAMILIES, family_description
from xtlunet.networks.encoder import Encoder, build_encoder
from xtlunet.networks.memory import estimate_memory_bytes
from xtlunet.networks.nets import ClassificationNet, SegmentationNet
from xtlunet.networks.torchvision_keys import KeyMapping, torchvision_to_xtlunet, xtlunet_to_torchvision

__all__ = [
    "ArchitectureDescription", "FAMILIES", "family_description", "build_network", "build_encoder", "Encoder",
    "SegmentationNet", "ClassificationNet", "count_parameters", "parameter_groups", "estimate_memory_bytes",
    "KeyMapping", "torchvision_to_xtlunet", "xtlunet_to_torchvision",
]

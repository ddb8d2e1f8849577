"""plans.json: the one versioned document that every stage after planning reads."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xtlunet.errors import XtlunetError, did_you_mean
from xtlunet.networks.description import ArchitectureDescription
from xtlunet.utils.atomic import read_json, write_json

PLANS_VERSION = 1
DEFAULT_PLANS = "xtlunetPlans"
ANISOTROPY_THRESHOLD = 3.0  # an axis this many times coarser than the finest is treated apart (spacing, resampling)
CASCADE_KEYS = ("previous_stage", "next_stage")  # written only when set, so plans without a cascade keep their hashes


@dataclass
class ConfigurationPlan:
    """One configuration (2d, 3d_fullres, 3d_lowres, 3d_cascade_fullres, 3d_roi): spacing, patch, batch, network.

    A cascade stage names the configuration before it (`previous_stage`: its predictions become one-hot input
    channels) or after it (`next_stage`: its validation exports predictions for that stage).
    """

    name: str
    task: str
    dim: int
    spacing: list[float]
    patch_size: list[int]
    batch_size: int
    median_shape: list[int]
    normalization: list[str]
    use_mask_for_norm: list[bool]
    architecture: dict[str, Any]
    num_outputs: int
    data_identifier: str
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD
    batch_dice: bool = True      # Dice over the whole batch; False: per sample, averaged (nnU-Net's 3d_fullres alone)
    memory_estimate_gb: float = 0.0
    roi_mm: list[float] | None = None
    source_config: str | None = None
    pretrained_constraint: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    previous_stage: str | None = None
    next_stage: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; the cascade keys only when set (older plans keep their identity)."""
        d = asdict(self)
        for key in CASCADE_KEYS:
            if d[key] is None:
                del d[key]
        return d

    def network(self) -> ArchitectureDescription:
        """The architecture as a typed description."""
        return ArchitectureDescription.from_json(self.architecture)

    def preprocessing_key(self, reorient: bool = False) -> str:
        """A hash of everything that decides the preprocessed arrays of this configuration (and the plans' reorient)."""
        keys = {"spacing": self.spacing, "normalization": self.normalization,
                "use_mask_for_norm": self.use_mask_for_norm, "dim": self.dim,
                "source_config": self.source_config, "anisotropy_threshold": self.anisotropy_threshold}
        if reorient:  # only when on, so arrays preprocessed before the option existed stay current
            keys["reorient"] = True
        return hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Plans:
    """Planned configurations of one dataset."""

    plans_name: str
    dataset_name: str
    planner: str
    task: str
    channel_names: dict[str, str]
    labels: dict[str, int]
    classes: dict[str, int]
    transpose_forward: list[int]
    foreground_intensity_properties: dict[str, dict[str, float]]
    configurations: dict[str, ConfigurationPlan]
    reorient: bool = False  # cases brought to their closest RAS+ frame before transpose_forward (undone at export)
    version: int = PLANS_VERSION

    @property
    def transpose_backward(self) -> list[int]:
        """Inverse permutation of transpose_forward."""
        return [self.transpose_forward.index(i) for i in range(len(self.transpose_forward))]

    def foreground_labels(self) -> list[int]:
        """The nonzero label values, ascending."""
        return sorted(v for v in set(self.labels.values()) if v != 0)

    def input_channels(self, conf: ConfigurationPlan) -> int:
        """Channels a configuration's network reads: the images', plus one per foreground label after a previous
        cascade stage."""
        return len(self.channel_names) + (len(self.foreground_labels()) if conf.previous_stage else 0)

    def configuration(self, name: str) -> ConfigurationPlan:
        """A configuration by name, or a clear error with a suggestion."""
        if name not in self.configurations:
            opts = list(self.configurations)
            raise XtlunetError(f"configuration '{name}' is not in plans {self.plans_name}{did_you_mean(name, opts)}",
                               fix=f"use one of: {', '.join(opts)}")
        return self.configurations[name]

    def design_identity(self, configuration: str) -> str:
        """A short hash of what one configuration trains on — network, patch, spacing, batch, normalisation, axes —
        but not the plans' name: arms that share it are comparable, whatever their plans file is called."""
        conf = self.configuration(configuration).to_json()
        for key in ("name", "data_identifier", "notes", "memory_estimate_gb"):
            conf.pop(key, None)
        design = {"configuration": conf, "transpose_forward": self.transpose_forward, "reorient": self.reorient,
                  "intensity": self.foreground_intensity_properties, "labels": self.labels, "classes": self.classes}
        return hashlib.sha1(json.dumps(design, sort_keys=True).encode()).hexdigest()[:16]

    def identity(self) -> str:
        """A short hash of the whole plan, stored in checkpoints to refuse mismatched plans."""
        d = self.to_json()
        if not self.reorient:  # plans made before the option existed keep their identity
            del d["reorient"]
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["configurations"] = {k: v.to_json() for k, v in self.configurations.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Plans":
        """Inverse of to_json; refuses plans of another format version."""
        if d.get("version") != PLANS_VERSION:
            raise XtlunetError(f"plans version {d.get('version')} is not supported (expected {PLANS_VERSION})",
                               fix="re-run xtlunet plan-and-preprocess")
        confs = {k: ConfigurationPlan(**v) for k, v in d["configurations"].items()}
        return cls(**{**{k: v for k, v in d.items() if k != "configurations"}, "configurations": confs})

    def save(self, path: Path) -> None:
        """Write atomically."""
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> "Plans":
        """Read plans.json, with a clear error when it is missing or malformed."""
        if not path.is_file():
            raise XtlunetError("plans file not found", path=path,
                               fix="run 'xtlunet plan-and-preprocess' for this dataset first")
        try:
            return cls.from_json(read_json(path))
        except (KeyError, TypeError) as exc:
            raise XtlunetError(f"malformed plans file ({exc})", path=path, fix="re-run xtlunet plan-and-preprocess") from None

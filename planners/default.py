"""DefaultPlanner: nnU-Net-like configurations (2d, 3d_fullres, 3d_lowres + 3d_cascade_fullres, 3d_roi) from a
fingerprint."""
from __future__ import annotations

import logging
from copy import deepcopy
from dataclasses import dataclass, replace

import numpy as np

from xtlunet.dataset.spec import DatasetSpec
from xtlunet.errors import XtlunetError
from xtlunet.fingerprint import Fingerprint
from xtlunet.networks.description import ArchitectureDescription
from xtlunet.plans import DEFAULT_PLANS, ConfigurationPlan, Plans
from xtlunet.planners import rules

log = logging.getLogger("xtlunet")
GB = 1024 ** 3
CASCADE = "3d_cascade_fullres"   # nnU-Net's name: 3d_fullres fed with the 3d_lowres prediction as extra channels


@dataclass
class Topology:
    """A fitted patch, its network and batch size."""

    patch: list[int]
    arch: ArchitectureDescription
    batch_size: int
    memory_bytes: float


def plain_architecture(spacing: list[float], patch: list[int], in_channels: int,
                       planner: "type[DefaultPlanner] | DefaultPlanner | None" = None) -> ArchitectureDescription:
    """A planner's plain nnU-Net-like encoder for a patch and spacing (also pretrain-2d's plain 2D network)."""
    p = planner or DefaultPlanner
    dim = len(spacing)
    strides, kernels = rules.pooling_plan(spacing, patch, p.max_stages[dim])
    return ArchitectureDescription(family="plain", dim=dim, in_channels=in_channels,
                                   widths=rules.stage_widths(len(strides), p.max_width[dim]),
                                   strides=strides, kernel_sizes=kernels, blocks=[2] * len(strides), norm=p.norm)


class DefaultPlanner:
    """Plans every configuration by nnU-Net-like rules; subclasses swap `architecture`."""

    plans_name = DEFAULT_PLANS
    budget_voxels = {2: 2048.0 ** 2, 3: 256.0 ** 3}
    max_stages: dict[int, int | None] = {2: None, 3: None}   # None: as nnU-Net, pool until the min edge
    max_width = {2: 512, 3: 320}
    norm = "instance"
    # None: as nnU-Net, the batch is capped by the memory and by batch_size_cap (5 % of the dataset) only
    max_batch: dict[str, int | None] = {"segmentation": None, "classification": 32}

    def __init__(self, spec: DatasetSpec, fingerprint: Fingerprint, gpu_memory_gb: float = 8.0,
                 plans_name: str | None = None) -> None:
        self.spec = spec
        self.fp = fingerprint
        self.budget = gpu_memory_gb * GB
        self.plans_name = plans_name or self.plans_name
        self.task = spec.task
        self.num_outputs = len(spec.classes) if spec.is_classification else len(spec.label_values())

    # ---- architecture (the part subclasses change) ----
    def architecture(self, spacing: list[float], patch: list[int]) -> ArchitectureDescription:
        """A plain nnU-Net-like encoder for this patch and spacing."""
        return plain_architecture(spacing, patch, self.spec.num_channels, self)

    def constraint(self) -> dict | None:
        """What constrains the topology (None for the default planner)."""
        return None

    # ---- fitting ----
    def memory(self, arch: ArchitectureDescription, patch: list[int], batch: int, task: str) -> float:
        """Estimated training memory in bytes."""
        from xtlunet.networks.memory import estimate_memory_bytes

        return float(estimate_memory_bytes(arch, patch, batch, self.num_outputs, task))

    def fit(self, spacing: list[float], shape: list[int], patch: list[int], task: str, batch_cap: int) -> Topology:
        """Shrink the patch until batch 2 fits the memory budget, then grow the batch up to its cap."""
        while True:
            arch = self.architecture(spacing, patch)
            patch = rules.round_to_divisible(patch, arch.total_stride())
            arch = self.architecture(spacing, patch)
            mem = self.memory(arch, patch, 2, task)
            if mem <= self.budget:
                break
            smaller = rules.shrink_axis(patch, shape, arch.total_stride())
            if smaller is None or min(smaller) < 1:
                raise XtlunetError(f"no patch fits {self.budget / GB:.3g} GB (smallest needs {mem / GB:.3g} GB)",
                                   fix="raise --gpu-memory-gb")
            patch = smaller
        batch = self.largest_batch(arch, patch, task, min(batch_cap, self.max_batch[task] or batch_cap))
        return Topology(patch, arch, batch, self.memory(arch, patch, batch, task))

    def largest_batch(self, arch: ArchitectureDescription, patch: list[int], task: str, cap: int) -> int:
        """The largest batch in [2, cap] whose memory fits the budget (2 fits; memory grows with the batch)."""
        low, high = 2, max(2, cap)
        while low < high:
            mid = (low + high + 1) // 2
            if self.memory(arch, patch, mid, task) <= self.budget:
                low = mid
            else:
                high = mid - 1
        return low

    # ---- configurations ----
    def _configuration(self, name: str, spacing: list[float], shape: list[int], topo: Topology, task: str,
                       roi_mm: list[float] | None = None, source: str | None = None) -> ConfigurationPlan:
        """Assemble a ConfigurationPlan."""
        schemes = [rules.normalization_scheme(n) for n in self.spec.channel_names.values()]
        rel = self.fp.median_relative_size_after_crop()
        return ConfigurationPlan(
            name=name, task=task, dim=len(spacing), spacing=[float(s) for s in spacing], patch_size=topo.patch,
            batch_size=topo.batch_size, median_shape=[int(s) for s in shape], normalization=schemes,
            use_mask_for_norm=[rules.use_mask_for_norm(s, rel) for s in schemes], architecture=topo.arch.to_json(),
            num_outputs=self.num_outputs, data_identifier=f"{self.plans_name}_{source or name}",
            memory_estimate_gb=round(topo.memory_bytes / GB, 4), roi_mm=roi_mm, source_config=source,
            pretrained_constraint=self.constraint())

    def plan(self, configurations: list[str] | None = None) -> Plans:
        """Plan all configurations that apply to this dataset (or only those asked for)."""
        fp = self.fp
        raw_target = rules.target_spacing(fp.spacings, fp.shapes_after_crop)
        order = rules.transpose_forward(raw_target) if fp.dim == 3 else list(range(fp.dim))
        spacings = fp.spacings[:, order]
        shapes = fp.shapes_after_crop[:, order]
        target = [raw_target[i] for i in order]
        full_shape = rules.median_shape(shapes, spacings, target)
        n = len(fp.cases)
        confs: dict[str, ConfigurationPlan] = {}
        wanted = configurations or self.default_configurations()
        for name in dict.fromkeys("3d_lowres" if w == CASCADE else w for w in wanted):   # the cascade follows lowres
            conf = self._plan_one(name, target, full_shape, n, confs)
            if conf is not None:
                confs[name] = conf
        if "3d_lowres" in confs:
            full = confs.get("3d_fullres") or self._plan_one("3d_fullres", target, full_shape, n, confs)
            confs[CASCADE] = self._plan_cascade(full, confs["3d_lowres"])
        elif CASCADE in wanted:
            log.info("%s not planned: it follows a 3d_lowres, which this dataset does not need", CASCADE)
        if not confs:
            raise XtlunetError(f"none of the configurations {wanted} applies to {self.spec.name}",
                               fix=f"use one of: {', '.join(self.default_configurations())}")
        self._choose_batch_dice(confs, target, full_shape, n)
        return Plans(plans_name=self.plans_name, dataset_name=self.spec.name, planner=type(self).__name__,
                     task=self.task, channel_names={str(k): v for k, v in self.spec.channel_names.items()},
                     labels=dict(self.spec.labels), classes=dict(self.spec.classes), transpose_forward=order,
                     foreground_intensity_properties=fp.intensity, configurations=confs)

    def _choose_batch_dice(self, confs: dict[str, ConfigurationPlan], target: list[float], shape: list[int],
                           n: int) -> None:
        """nnU-Net's Dice choice: per sample for 3d_lowres and for a 3d_fullres that has no 3d_lowres beside it
        (whether or not 3d_lowres was asked for), batch Dice otherwise."""
        if "3d_lowres" in confs:
            confs["3d_lowres"].batch_dice = False
        full = confs.get("3d_fullres")
        if full is not None:
            lowres = confs.get("3d_lowres") or self._plan_lowres(target, shape, full, n)
            full.batch_dice = lowres is not None

    def default_configurations(self) -> list[str]:
        """The configurations planned when none is asked for (3D classification: 3d_roi, its ROIs being 3D)."""
        if self.fp.dim == 2:
            return ["2d"]
        return ["3d_roi"] if self.task == "classification" else ["2d", "3d_fullres", "3d_lowres"]

    def _plan_one(self, name: str, target: list[float], shape: list[int], n: int,
                  done: dict[str, ConfigurationPlan]) -> ConfigurationPlan | None:
        """Plan one configuration, or None when it does not apply (e.g. 3d_lowres not needed)."""
        from xtlunet.errors import look_up_option

        look_up_option(name, ["2d", "3d_fullres", "3d_lowres", CASCADE, "3d_roi"], "configuration")
        if name == "2d" and self.fp.dim == 3 and self.task == "classification":
            raise XtlunetError(f"configuration '2d' is not planned for {self.spec.name}: its findings are classified "
                               "from 3D regions of interest", fix="use -c 3d_roi")
        if name == "2d":
            sp, sh = (target, shape) if self.fp.dim == 2 else (target[1:], shape[1:])
            task = self.task
            patch = rules.initial_patch_size(sp, sh, self.budget_voxels[2])
            cap = rules.batch_size_cap(patch, sh, n * (1 if self.fp.dim == 2 else shape[0]))
            return self._configuration("2d", sp, sh, self.fit(sp, sh, patch, task, cap), task)
        if self.fp.dim == 2:
            raise XtlunetError(f"configuration '{name}' needs a 3D dataset; {self.spec.name} is 2D", fix="use -c 2d")
        if name == "3d_roi":
            return self._plan_roi(target, shape)
        if self.task == "classification":
            raise XtlunetError(f"configuration '{name}' is for segmentation; {self.spec.name} is a classification dataset",
                               fix="use -c 3d_roi")
        full_patch = rules.initial_patch_size(target, shape, self.budget_voxels[3])
        full = done.get("3d_fullres") or self._configuration(
            "3d_fullres", target, shape, self.fit(target, shape, full_patch, "segmentation",
                                                  rules.batch_size_cap(full_patch, shape, n)), "segmentation")
        if name == "3d_fullres":
            return full
        return self._plan_lowres(target, shape, full, n)

    def _plan_lowres(self, target: list[float], shape: list[int], full: ConfigurationPlan, n: int) -> ConfigurationPlan | None:
        """3d_lowres when the full-resolution patch covers < 25 % of the median image."""
        if np.prod(full.patch_size) / np.prod(shape) >= 0.25:
            log.info("3d_lowres not needed: the 3d_fullres patch covers ≥ 25 % of the median image")
            return None
        spacing = np.asarray(target, float)
        topo = None
        for _ in range(200):
            ratio = spacing.max() / spacing
            spacing = spacing * np.where(ratio > 2, 1.03, 1.0) if (ratio > 2).any() else spacing * 1.03
            low_shape = [int(round(s * t / l)) for s, t, l in zip(shape, target, spacing)]
            patch = rules.initial_patch_size(spacing.tolist(), low_shape, self.budget_voxels[3])
            topo = self.fit(spacing.tolist(), low_shape, patch, "segmentation", rules.batch_size_cap(patch, low_shape, n))
            if np.prod(topo.patch) / np.prod(low_shape) >= 0.25:
                break
        if np.prod(low_shape) > 0.5 * np.prod(shape):
            log.info("3d_lowres not planned: its median image keeps > 50 % of the full-resolution voxels")
            return None
        conf = self._configuration("3d_lowres", spacing.tolist(), low_shape, topo, "segmentation")
        conf.notes.append("cascade stage 1: resampled to a coarser spacing so the patch covers ≥ 25 % of the image")
        return conf

    def _plan_cascade(self, full: ConfigurationPlan, lowres: ConfigurationPlan) -> ConfigurationPlan:
        """3d_cascade_fullres: 3d_fullres (its spacing, patch, network and preprocessed arrays) whose network also reads
        the 3d_lowres prediction, one-hot, as one extra input channel per foreground label."""
        labels = self.spec.foreground_labels()
        arch = replace(full.network(), in_channels=self.spec.num_channels + len(labels))
        lowres.next_stage = CASCADE
        memory = self.memory(arch, full.patch_size, full.batch_size, "segmentation")
        return replace(full, name=CASCADE, architecture=arch.to_json(), memory_estimate_gb=round(memory / GB, 4),
                       previous_stage=lowres.name, pretrained_constraint=deepcopy(full.pretrained_constraint), notes=[
                           *full.notes, f"cascade stage 2: 3d_fullres with the 3d_lowres prediction as "
                           f"{len(labels)} one-hot input channel(s) (labels {', '.join(map(str, labels))})"])

    def _plan_roi(self, target: list[float], shape: list[int]) -> ConfigurationPlan:
        """3d_roi for classification: an ROI around each finding, its FOV in mm from the findings."""
        if self.task != "classification":
            raise XtlunetError(f"configuration '3d_roi' is for classification; {self.spec.name} is segmentation",
                               fix="use -c 3d_fullres")
        border = [b for c in self.fp.cases for b in c.finding_border_mm]
        fov = rules.roi_field_of_view(border, target)
        patch = [min(int(np.ceil(f / s)), sh) for f, s, sh in zip(fov, target, shape)]
        n_findings = int(self.fp.findings.get("total", len(self.fp.cases)))
        topo = self.fit(target, shape, patch, "classification", max(2, n_findings // 5))
        roi = [float(p * s) for p, s in zip(topo.patch, target)]
        return self._configuration("3d_roi", target, shape, topo, "classification", roi_mm=roi, source="3d_fullres")

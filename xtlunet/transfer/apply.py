"""transfer_weights: carry a 2D source state dict into a (2D or 3D) target network, with a report."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from xtlunet.errors import XtlunetError, look_up_option
from xtlunet.networks.build import unwrap
from xtlunet.transfer.channels import adapt_input_channels
from xtlunet.transfer.checkpoint import STATE_DICT_KEYS, load_checkpoint_state, split_checkpoint
from xtlunet.transfer.keys import GROUPS, StructuralKey, parse_key, to_structural
from xtlunet.transfer.kernels import MODES, convert_kernel
from xtlunet.transfer.report import FROM_SOURCE, TensorRow, TransferReport, UnusedKey

RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")
ARCH_FIX = "build the target from the source's ArchitectureDescription (same family, widths and in-plane kernels)"


class _Mismatch(Exception):
    """A source/target shape pair that no rule converts."""


def transfer_weights(source: Mapping[str, Tensor] | str | Path, target: nn.Module, mode: str = "inflate",
                     min_encoder_coverage: float = 0.0, source_family: str | None = None,
                     groups: Sequence[str] = ("encoder",), source_path: str | Path | None = None) -> TransferReport:
    """Load a 2D (or same-dimension) source into `target` in place by structure; refuse loudly on any gap.

    Args:
        source: a state dict, a loaded checkpoint dict, or a checkpoint path (read by `load_checkpoint_state`).
        target: the network to fill (SegmentationNet, ClassificationNet or bare Encoder).
        mode: how 2D kernels become 3D ones where the planned depth is > 1: inflate, center or acs.
        min_encoder_coverage: refuse when a smaller fraction of encoder parameters came from the source.
        source_family: the torchvision family of a torchvision source (inferred from its keys if None).
        groups: which groups transfer; decoder/head rows outside them stay `new` (fresh init).
        source_path: the file an already loaded `source` came from (named in the report and in errors).

    Example:
        >>> report = transfer_weights("pretrained_2d.pth", net3d, mode="inflate", min_encoder_coverage=0.9)
        >>> print(report.summary())
    """
    look_up_option(mode, MODES, "transfer mode")
    for g in groups:
        look_up_option(g, GROUPS, "transfer group")
    start = time.perf_counter()
    named = source if isinstance(source, (str, Path)) else source_path   # the file errors name
    if isinstance(source, (str, Path)):
        state, meta = load_checkpoint_state(source)
        source_name = str(source)
        if source_family is None and isinstance(meta.get("architecture"), Mapping):
            source_family = meta["architecture"].get("family")
    elif any(k in source for k in ("format_version", *STATE_DICT_KEYS)):
        state, meta = split_checkpoint(source, source_path or "<checkpoint>")   # an already loaded checkpoint object
        source_name = str(source_path) if source_path else "<checkpoint dict>"
        if source_family is None and isinstance(meta.get("architecture"), Mapping):
            source_family = meta["architecture"].get("family")
    else:
        state, source_name = dict(source), str(source_path) if source_path else "<state dict>"
    index, unrecognised, fmt = to_structural(state, source_family)
    _check_family(fmt.partition(":")[2] or source_family, target, named)
    report = TransferReport(mode=mode, source=source_name, source_format=fmt)
    report.unused = [UnusedKey(k, list(v.shape), reason) for k, v, reason in unrecognised]

    modules = dict(target.named_modules())
    first_conv = _first_conv(target)
    param_names = {n for n, _ in target.named_parameters()}
    new_state: dict[str, Tensor] = {}
    consumed: set[StructuralKey] = set()
    target_state = target.state_dict()
    for name, tensor in target_state.items():
        row, value = _transfer_one(name, tensor, modules, index, consumed, mode, first_conv, groups)
        row.is_parameter = name in param_names
        report.rows.append(row)
        if value is not None:
            new_state[name] = value
    by_structure = {parsed.module: m for n, m in modules.items() if (parsed := parse_key(f"{n}.weight"))}
    for skey, (orig, value) in index.items():
        if skey not in consumed:
            report.unused.append(UnusedKey(orig, list(value.shape), _unused_reason(skey, by_structure, groups)))

    if [r.name for r in report.rows] != list(target_state):
        raise RuntimeError("transfer report does not account for every target tensor")
    report.compute_coverage()
    _refuse_if_empty(report, state, target_state, named)
    if report.coverage["encoder"] < min_encoder_coverage:
        got, total = report.parameters["encoder"]
        raise XtlunetError(
            f"only {100 * report.coverage['encoder']:.1f}% of encoder parameters ({got}/{total}) came from the "
            f"source, below the required {100 * min_encoder_coverage:.1f}% ({report.summary()})",
            path=named,
            fix="use a checkpoint pretrained with the same encoder family and widths as the plan",
            details=[f"{r.name}: {r.reason}" for r in report.rows if r.group == "encoder" and r.is_parameter
                     and r.status not in FROM_SOURCE][:20])
    result = target.load_state_dict(new_state, strict=False)
    # BatchNorm fills an absent num_batches_tracked itself (keeping its value), so it is never "missing"
    expected_missing = {r.name for r in report.rows if r.status not in FROM_SOURCE
                        and not r.name.endswith("num_batches_tracked")}
    if result.unexpected_keys or set(result.missing_keys) != expected_missing:
        raise RuntimeError(f"load_state_dict disagrees with the report: unexpected {result.unexpected_keys}, "
                           f"missing {sorted(set(result.missing_keys) ^ expected_missing)}")
    report.seconds = time.perf_counter() - start
    return report


def _transfer_one(name: str, tensor: Tensor, modules: dict[str, nn.Module],
                  index: dict[StructuralKey, tuple[str, Tensor]], consumed: set[StructuralKey], mode: str,
                  first_conv: nn.Module | None, groups: Sequence[str]) -> tuple[TensorRow, Tensor | None]:
    """The row for one target tensor and the value to load into it (None when it keeps its init)."""
    shape = list(tensor.shape)
    skey = parse_key(name)
    if skey is None:
        return TensorRow(name, "new", shape, reason="not an encoder/decoder/head tensor", group="other"), None
    row = TensorRow(name, "new", shape, group=skey.coverage_group)
    module = modules.get(name.rpartition(".")[0])
    if skey.coverage_group not in groups:
        row.reason = ("head differs between source and target: keeps its fresh init"
                      if skey.coverage_group == "head" else "decoder layer is new: only encoder tensors transfer")
        return row, None
    if skey not in index:
        row.reason = "no source tensor at this position"
        return row, None
    src_key, src = index[skey]
    consumed.add(skey)
    row.source_key, row.source_shape = src_key, list(src.shape)
    if isinstance(module, _ConvTransposeNd):
        src_weight = index.get(skey._replace(param="weight"), (None, None))[1]
        if src_weight is None or tuple(src_weight.shape) != tuple(module.weight.shape):
            row.status, row.reason = "skipped", "transposed convs are never converted (decoder upsampling is new)"
            return row, None
    try:
        value, status, rule = _convert(skey, module, src, tensor, mode, module is first_conv)
    except _Mismatch as exc:
        if skey.group == "encoder":
            raise XtlunetError(f"shape mismatch with no conversion rule at '{name}': source '{src_key}' "
                               f"{list(src.shape)} vs target {shape} ({exc})", fix=ARCH_FIX) from None
        row.status, row.reason = "skipped", f"shape mismatch with no rule ({exc})"
        return row, None
    except XtlunetError as exc:
        raise XtlunetError(f"cannot convert '{src_key}' into '{name}': {exc.what}", fix=exc.fix) from None
    row.status, row.rule = status, rule
    return row, value.to(dtype=tensor.dtype)


def _convert(skey: StructuralKey, module: nn.Module | None, src: Tensor, tgt: Tensor, mode: str,
             is_first_conv: bool) -> tuple[Tensor, str, str]:
    """(value, status, rule) for one matched pair; raises _Mismatch when no rule applies."""
    if not (isinstance(module, _ConvNd) and not isinstance(module, _ConvTransposeNd) and skey.param == "weight"):
        if tuple(src.shape) != tuple(tgt.shape):
            raise _Mismatch("different sizes")
        return src.clone(), "loaded", "copy"
    rules: list[str] = []
    status = "loaded"
    if src.shape[0] != tgt.shape[0]:
        raise _Mismatch(f"{src.shape[0]} vs {tgt.shape[0]} output channels")
    if src.shape[1] != tgt.shape[1]:
        if not is_first_conv:
            raise _Mismatch(f"{src.shape[1]} vs {tgt.shape[1]} input channels; only the first conv is adapted")
        src, rule = adapt_input_channels(src, tgt.shape[1])
        rules.append(rule)
        status = "channel-adapted"
    if src.ndim == 4 and tgt.ndim == 5:
        if tuple(src.shape[2:]) != tuple(tgt.shape[3:]):
            raise _Mismatch(f"in-plane kernel {list(src.shape[2:])} vs {list(tgt.shape[3:])}")
        src, rule = convert_kernel(src, tgt.shape, mode, getattr(module, "groups", 1))
        rules.append(rule)
        status = "converted" if status == "loaded" else status
    elif tuple(src.shape) != tuple(tgt.shape):
        raise _Mismatch(f"kernel {list(src.shape[2:])} vs {list(tgt.shape[2:])}")
    elif not rules:
        src, rules = src.clone(), ["copy"]
    return src, status, "+".join(rules)


def _check_family(source_family: str | None, target: nn.Module, path: str | Path | None = None) -> None:
    """Refuse a source whose declared encoder family differs from the target's description."""
    desc = getattr(unwrap(target), "desc", None)
    target_family = getattr(desc, "family", None)
    if source_family and target_family and source_family != target_family:
        raise XtlunetError(f"the source encoder is {source_family}, the target's is {target_family}", path=path,
                           fix=f"pretrain the 2D network with --arch {target_family}, or plan the target with "
                               f"the source's family (the xtl-constrained planner)")


def _first_conv(target: nn.Module) -> nn.Module | None:
    """The input conv: the target's declared `first_conv` (name or module), else its first conv."""
    declared = getattr(target, "first_conv", None)
    if isinstance(declared, nn.Module):
        return declared
    if isinstance(declared, str):
        try:
            return target.get_submodule(declared)
        except AttributeError:
            pass
    for _, m in target.named_modules():
        if isinstance(m, _ConvNd) and not isinstance(m, _ConvTransposeNd):
            return m
    return None


def _unused_reason(skey: StructuralKey, target_modules: dict[tuple, nn.Module], groups: Sequence[str]) -> str:
    """Why a source tensor that parsed as one of our names was not used."""
    if skey.coverage_group not in groups:
        return ("head tensor: heads differ between source and target" if skey.coverage_group == "head"
                else "decoder tensor: only encoder tensors transfer")
    if skey.param in RUNNING_STATS and skey.module in target_modules:
        return f"running statistics: the target {type(target_modules[skey.module]).__name__} keeps none"
    return "no target tensor at this position"


def _refuse_if_empty(report: TransferReport, state: Mapping[str, Tensor], target_state: Mapping[str, Tensor],
                     path: str | Path | None) -> None:
    """Raise when not a single tensor came from the source."""
    if any(r.status in FROM_SOURCE for r in report.rows):
        return
    source_keys = [k for k, v in state.items() if isinstance(v, Tensor)]
    hint = _prefix_hint(source_keys)
    raise XtlunetError(
        f"no tensor of the source ({report.source_format}, {len(source_keys)} tensors, e.g. "
        f"{', '.join(source_keys[:3]) or 'none'}) matches the target (e.g. {', '.join(list(target_state)[:3])})"
        f"{hint}", path=path,
        fix="pass a checkpoint of the same encoder family (xtlunet names, or torchvision ResNet/VGG names "
            "with source_family)")


def _prefix_hint(keys: list[str]) -> str:
    """A '; strip the X. prefix' hint when all source keys share one unknown leading name."""
    firsts = Counter(k.split(".", 1)[0] for k in keys if "." in k)
    if len(firsts) == 1:
        (prefix, _), = firsts.items()
        stripped = [k.split(".", 1)[1] for k in keys]
        if any(parse_key(k) for k in stripped) or any(k.startswith(("layer", "conv1", "features")) for k in stripped):
            return f"; every key starts with '{prefix}.' — strip that prefix"
    return ""

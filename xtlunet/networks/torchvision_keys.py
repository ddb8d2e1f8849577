"""torchvision ResNet-18/34/50 and VGG16-BN state-dict keys ⇄ xtlunet encoder keys, by an explicit rule table.

Each rule pairs a torchvision key template with an xtlunet template (encoder-relative, e.g.
``stages.1.blocks.0.conv1.weight``); ``{name}`` placeholders match the same value on both sides.
Heads (``fc.*``, ``classifier.*``) are recognised and left out. Every required rule must match at
least one key, so a state dict with a foreign prefix (``backbone.conv1.weight``) is refused.

Example:
    >>> from xtlunet.networks.encoder import build_encoder
    >>> from xtlunet.networks.description import family_description
    >>> enc = build_encoder(family_description("resnet18", 2, 3))
    >>> tv = xtlunet_to_torchvision(enc.state_dict(), "resnet18").state_dict
    >>> enc.load_state_dict(torchvision_to_xtlunet(tv, "resnet18").state_dict)
    <All keys matched successfully>
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import torch

from xtlunet.errors import XtlunetError, look_up_option
from xtlunet.networks.build import strip_wrapper_prefixes


@dataclass(frozen=True)
class KeyRule:
    """A torchvision key template and its xtlunet template (None: a head key, recognised and dropped)."""

    source: str
    target: str | None
    required: bool = True


@dataclass
class KeyMapping:
    """A renamed state dict, the source keys that were not carried over, and conv biases folded into BN."""

    state_dict: dict[str, torch.Tensor]
    unused: list[str] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)


PARAM = r"[a-z_]+"  # weight, bias, running_mean, running_var, num_batches_tracked


def _resnet_rules(convs_per_block: int) -> tuple[KeyRule, ...]:
    """torchvision ResNet: stem conv1/bn1 → stage 0; layer{L} → stage L; downsample.0/1 → conv/norm."""
    n = f"[1-{convs_per_block}]"
    block = "layer{L:[1-4]}.{j:\\d+}"
    ours = "stages.{L}.blocks.{j}"
    return (
        KeyRule("conv1.{p}", "stages.0.blocks.0.conv.{p}"),
        KeyRule("bn1.{p}", "stages.0.blocks.0.norm.{p}"),
        KeyRule(f"{block}.conv{{n:{n}}}.{{p}}", f"{ours}.conv{{n}}.{{p}}"),
        KeyRule(f"{block}.bn{{n:{n}}}.{{p}}", f"{ours}.norm{{n}}.{{p}}"),
        KeyRule(f"{block}.downsample.0.{{p}}", f"{ours}.downsample.conv.{{p}}"),
        KeyRule(f"{block}.downsample.1.{{p}}", f"{ours}.downsample.norm.{{p}}"),
        KeyRule("fc.{p}", None, required=False),
    )


# torchvision vgg16_bn `features` index of each conv, per stage (its BatchNorm is at index + 1, the
# ReLU at + 2, and a max-pool closes every stage; our stage i ≥ 1 pools first, so the last pool is dropped)
VGG16_BN_CONV_INDICES: tuple[tuple[int, ...], ...] = ((0, 3), (7, 10), (14, 17, 20), (24, 27, 30), (34, 37, 40))


def _vgg_rules() -> tuple[KeyRule, ...]:
    """torchvision VGG16-BN: features.{conv index} → stages.{i}.blocks.{j}.conv, index + 1 → .norm."""
    rules = []
    for i, indices in enumerate(VGG16_BN_CONV_INDICES):
        for j, idx in enumerate(indices):
            rules += [KeyRule(f"features.{idx}.{{p}}", f"stages.{i}.blocks.{j}.conv.{{p}}"),
                      KeyRule(f"features.{idx + 1}.{{p}}", f"stages.{i}.blocks.{j}.norm.{{p}}")]
    return (*rules, KeyRule("classifier.{j:\\d+}.{p}", None, required=False))


RULES: dict[str, tuple[KeyRule, ...]] = {
    "resnet18": _resnet_rules(2), "resnet34": _resnet_rules(2), "resnet50": _resnet_rules(3),
    "vgg16_bn": _vgg_rules(),
}
_PLACEHOLDER = re.compile(r"\{(\w+)(?::([^{}]+))?\}")


def _compile(template: str, patterns: dict[str, str]) -> tuple[re.Pattern[str], str]:
    """A full-match regex for a template, and the template with patterns removed (for formatting)."""
    regex, plain, pos = "", "", 0
    for m in _PLACEHOLDER.finditer(template):
        regex += re.escape(template[pos:m.start()]) + f"(?P<{m[1]}>{m[2] or patterns.get(m[1], PARAM)})"
        plain += template[pos:m.start()] + "{" + m[1] + "}"
        pos = m.end()
    return re.compile(regex + re.escape(template[pos:]) + "$"), plain + template[pos:]


def _patterns(template: str) -> dict[str, str]:
    """The placeholder patterns a template declares, e.g. {'L': '[1-4]'}."""
    return {m[1]: m[2] for m in _PLACEHOLDER.finditer(template) if m[2]}


def _rename(state_dict: Mapping[str, torch.Tensor], rules: tuple[KeyRule, ...], to_xtlunet: bool,
            strip: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], list[str], dict[KeyRule, int]]:
    """Apply the rules in one direction; return the renamed dict, unused keys and matches per rule."""
    compiled = []
    for rule in rules:
        if rule.target is None and not to_xtlunet:
            continue
        src, dst = (rule.source, rule.target) if to_xtlunet else (rule.target, rule.source)
        patterns = _patterns(rule.source)
        compiled.append((rule, _compile(src, patterns)[0], _compile(dst, patterns)[1] if dst else None))
    out, unused, hits = {}, [], {rule: 0 for rule in rules}
    for key, value in state_dict.items():
        name = strip_wrapper_prefixes(key)
        for prefix in strip:
            name = name[len(prefix):] if name.startswith(prefix) else name
        match = next(((r, m, f) for r, p, f in compiled if (m := p.match(name))), None)
        if match is None or match[2] is None:
            unused.append(key)
            if match is not None:
                hits[match[0]] += 1
            continue
        rule, m, fmt = match
        hits[rule] += 1
        new = fmt.format(**m.groupdict())
        if new in out:
            raise XtlunetError(f"two keys of the state dict map to '{new}' (the second is '{key}')",
                               fix="pass a state dict without duplicated (e.g. wrapped and unwrapped) keys")
        out[new] = value
    return out, unused, hits


def _fold_conv_bias(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Fold conv biases into the following BatchNorm's running mean (same output, bias-free conv)."""
    folded = []
    for key in [k for k in state_dict if re.search(r"\.conv\d*\.bias$", k)]:
        mean_key = re.sub(r"\.conv(\d*)\.bias$", r".norm\1.running_mean", key)
        if mean_key in state_dict:
            state_dict[mean_key] = state_dict[mean_key] - state_dict.pop(key)
            folded.append(key)
    return folded


def torchvision_to_xtlunet(state_dict: Mapping[str, torch.Tensor], family: str, prefix: str = "",
                           fold_conv_bias: bool = True) -> KeyMapping:
    """Rename a torchvision ResNet/VGG16-BN state dict to encoder keys (prefixed by `prefix`, e.g. 'encoder.').

    `module.`/`_orig_mod.` prefixes are stripped first. With `fold_conv_bias`, a conv bias followed by
    BatchNorm (torchvision VGG) is folded into the running mean, since our convs before BN have none.
    """
    look_up_option(family, tuple(RULES), "torchvision family")
    rules = RULES[family]
    out, unused, hits = _rename(state_dict, rules, to_xtlunet=True, strip=())
    missing = [r.source for r in rules if r.required and not hits[r]]
    if missing:
        first = ", ".join(list(state_dict)[:3])
        raise XtlunetError(f"the {family} key rule '{missing[0]}' matches no key of the state dict "
                           f"(its first keys: {first})",
                           fix=f"pass a torchvision {family} state dict with keys like "
                               f"'{rules[0].source.format(p='weight')}' and no extra prefix")
    folded = _fold_conv_bias(out) if fold_conv_bias else []
    return KeyMapping({prefix + k: v for k, v in out.items()}, unused, folded)


def xtlunet_to_torchvision(state_dict: Mapping[str, torch.Tensor], family: str,
                           fill_conv_bias: bool = True) -> KeyMapping:
    """Rename encoder (or `encoder.`-prefixed network) keys to torchvision's; other keys are unused.

    With `fill_conv_bias`, VGG convs get the zero bias torchvision expects, so the result loads there.
    """
    look_up_option(family, tuple(RULES), "torchvision family")
    out, unused, _ = _rename(state_dict, RULES[family], to_xtlunet=False, strip=("encoder.",))
    if fill_conv_bias and family.startswith("vgg"):
        out = _with_zero_conv_bias(out)
    return KeyMapping(out, unused)


def _with_zero_conv_bias(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the zero bias torchvision's VGG convs carry, right after each bias-free conv weight."""
    convs = {f"features.{i}.weight" for stage in VGG16_BN_CONV_INDICES for i in stage}
    out = {}
    for key, value in state_dict.items():
        out[key] = value
        bias = key[:-len("weight")] + "bias"
        if key in convs and bias not in state_dict:
            out[bias] = value.new_zeros(value.shape[0])
    return out

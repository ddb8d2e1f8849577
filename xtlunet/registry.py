"""Find planner and trainer classes by name: in xtlunet.planners/xtlunet.trainers or a user module."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

from xtlunet.errors import XtlunetError, did_you_mean


def _modules(package: str) -> list[ModuleType]:
    """The package and all its submodules."""
    pkg = importlib.import_module(package)
    mods = [pkg]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}."):
        mods.append(importlib.import_module(info.name))
    return mods


def find_class(name: str, package: str, base: type, kind: str) -> type:
    """A subclass of `base` named `name` from `package`, or from 'some.module:Class' / 'some.module.Class'."""
    if ":" in name or "." in name:
        mod_name, _, cls_name = name.replace(":", ".").rpartition(".")
        try:
            cls = getattr(importlib.import_module(mod_name), cls_name)
        except (ImportError, AttributeError) as exc:
            raise XtlunetError(f"cannot import {kind} '{name}' ({exc})", fix="check the module path and class name") from None
        if not (inspect.isclass(cls) and issubclass(cls, base)):
            raise XtlunetError(f"'{name}' is not a {kind} class", fix=f"subclass {base.__name__}")
        return cls
    found: dict[str, type] = {}
    for mod in _modules(package):
        for attr, obj in vars(mod).items():
            if inspect.isclass(obj) and issubclass(obj, base) and not attr.startswith("_"):  # not private aliases
                found[attr] = obj
    if name in found:
        return found[name]
    raise XtlunetError(f"unknown {kind} '{name}'{did_you_mean(name, sorted(found))}",
                       fix=f"use one of: {', '.join(sorted(found))}, or module.path:ClassName")

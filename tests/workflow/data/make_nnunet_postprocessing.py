"""Writes nnunet_postprocessing_*.pkl and nnunet_postprocessing_cases.npz with nnU-Net v2 itself.

Run in an environment with nnunetv2 (e.g. benchmarks/.venv-nnunet):
    python tests/workflow/data/make_nnunet_postprocessing.py
The pickles are what nnU-Net's find_best_configuration saves, (pp_fns, pp_fn_kwargs); the npz holds label maps
and what nnU-Net's apply_postprocessing makes of them with each pickle, for the tests to compare against.
"""
from pathlib import Path

import numpy as np
from batchgenerators.utilities.file_and_folder_operations import load_pickle, save_pickle
from nnunetv2.postprocessing.remove_connected_components import (apply_postprocessing,
                                                                  remove_all_but_largest_component_from_segmentation)
from nnunetv2.utilities.label_handling.label_handling import LabelManager

HERE = Path(__file__).resolve().parent
fn = remove_all_but_largest_component_from_segmentation
manager = LabelManager({"background": 0, "a": 1, "b": 2, "c": 3}, regions_class_order=None)
PICKLES = {
    "foreground": ([fn], [{"labels_or_regions": manager.foreground_labels}]),      # nnU-Net's first candidate
    "per_label": ([fn, fn], [{"labels_or_regions": np.int64(2)}, {"labels_or_regions": (1, 3)}]),
    "none": ([], []),
}
rng = np.random.default_rng(7)
cases = []
for _ in range(3):
    seg = np.zeros((20, 24, 22), np.uint8)
    for _ in range(9):   # boxes of labels 1-3, some touching, of varied size
        lo = rng.integers(0, [16, 20, 18])
        size = rng.integers(1, 6, 3)
        seg[lo[0]:lo[0] + size[0], lo[1]:lo[1] + size[1], lo[2]:lo[2] + size[2]] = rng.integers(1, 4)
    cases.append(seg)
arrays = {f"case{k}": seg for k, seg in enumerate(cases)}
for name, content in PICKLES.items():
    path = HERE / f"nnunet_postprocessing_{name}.pkl"
    save_pickle(content, str(path))
    fns, kwargs = load_pickle(str(path))
    for k, seg in enumerate(cases):
        arrays[f"case{k}_{name}"] = apply_postprocessing(seg, fns, kwargs)
np.savez_compressed(HERE / "nnunet_postprocessing_cases.npz", **arrays)
print("wrote", sorted(p.name for p in HERE.glob("nnunet_postprocessing_*")))

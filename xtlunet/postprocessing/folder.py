"""Apply learnt post-processing to a folder of label files (`xtlunet apply-postprocessing`): xtlunet's
postprocessing.json or nnU-Net v2's postprocessing.pkl."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xtlunet.dataset.io import SUPPORTED_ENDINGS, read_header, read_image, write_image
from xtlunet.errors import XtlunetError
from xtlunet.postprocessing.nnunet_pkl import NnunetPostprocessing
from xtlunet.postprocessing.plan import PostprocessingPlan
from xtlunet.utils.lock import folder_lock
from xtlunet.utils.parallel import map_cases


def label_files(in_dir: Path) -> list[Path]:
    """The label images directly in a folder (hidden files, probabilities and other files left out)."""
    if not in_dir.is_dir():
        raise XtlunetError("input folder not found", path=in_dir, fix="give -i a folder of label files")
    files = sorted(p for p in in_dir.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name.lower().endswith(SUPPORTED_ENDINGS))
    if not files:
        raise XtlunetError("no label files in the input folder", path=in_dir,
                           fix=f"give -i a folder of segmentations ({', '.join(SUPPORTED_ENDINGS[:3])}, ...)")
    return files


@dataclass(frozen=True)
class _Job:
    """One file to post-process."""

    source: Path
    target: Path
    plan: PostprocessingPlan | NnunetPostprocessing


def _apply_file(job: _Job) -> str:
    """Post-process one label file into its target, with the source's geometry and dtype (runs in a worker)."""
    seg, geo = read_image(job.source)
    write_image(job.target, job.plan.apply(seg, geo.spacing).astype(seg.dtype, copy=False), geo)
    return job.target.name


def load_postprocessing(path: Path) -> PostprocessingPlan | NnunetPostprocessing:
    """A postprocessing.json (find-best-configuration) or, for a .pkl ending, nnU-Net v2's postprocessing.pkl."""
    return NnunetPostprocessing.load(path) if path.suffix.lower() == ".pkl" else PostprocessingPlan.load(path)


def apply_postprocessing_folder(in_dir: Path, out_dir: Path, plan_path: Path, num_workers: int = 1) -> list[str]:
    """Post-process every label file of in_dir into out_dir (same names, geometry and dtype); returns the names."""
    from xtlunet.inference.folder import check_folders

    plan = load_postprocessing(plan_path)
    files = label_files(in_dir)
    check_folders(in_dir, out_dir)
    for f in files:  # every header readable before the first file is written
        read_header(f)
    jobs = [_Job(f, out_dir / f.name, plan) for f in files]
    with folder_lock(out_dir, "post-processing output folder"):
        return map_cases(_apply_file, jobs, num_workers, desc="post-process")

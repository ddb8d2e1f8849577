"""dataset.json (nnU-Net v2 format plus the classification extension) and case discovery."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtlunet.dataset.io import SUPPORTED_ENDINGS
from xtlunet.errors import XtlunetError, did_you_mean
from xtlunet.utils.atomic import read_json

TASKS = ("segmentation", "classification")
_DATASET_DIR = re.compile(r"^Dataset(\d{3})_(.+)$")


@dataclass
class Case:
    """One training or test case: its channel files and (for training) its label file."""

    case_id: str
    image_files: list[Path]
    label_file: Path | None = None


@dataclass
class DatasetSpec:
    """The parsed dataset.json of one raw dataset folder."""

    root: Path
    channel_names: dict[int, str]
    labels: dict[str, int]
    num_training: int
    file_ending: str
    task: str = "segmentation"
    classes: dict[str, int] = field(default_factory=dict)
    findings_file: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Folder name, e.g. Dataset001_BrainMS."""
        return self.root.name

    @property
    def dataset_id(self) -> int:
        """The three-digit id of the folder name."""
        m = _DATASET_DIR.match(self.name)
        return int(m.group(1)) if m else -1

    @property
    def num_channels(self) -> int:
        """Number of input channels."""
        return len(self.channel_names)

    @property
    def json_path(self) -> Path:
        """Path of dataset.json."""
        return self.root / "dataset.json"

    @property
    def is_classification(self) -> bool:
        """Whether this is a lesion/image classification dataset."""
        return self.task == "classification"

    @property
    def findings_path(self) -> Path | None:
        """Path of findings.csv, if the dataset has one."""
        return self.root / self.findings_file if self.findings_file else None

    @classmethod
    def load(cls, root: str | Path) -> "DatasetSpec":
        """Parse and validate dataset.json in `root`."""
        root = Path(root)
        path = root / "dataset.json"
        if not path.is_file():
            raise XtlunetError("dataset.json is missing", path=path,
                               fix="create dataset.json with channel_names, labels, numTraining and file_ending")
        d = read_json(path)
        if not isinstance(d, dict):
            raise XtlunetError("dataset.json must hold a JSON object", path=path, fix="see documentation/dataset_format.md")
        missing = [k for k in ("channel_names", "labels", "numTraining", "file_ending") if k not in d]
        if "channel_names" not in d and "modality" in d:
            missing = [m for m in missing if m != "channel_names"]
            d["channel_names"] = d["modality"]
        if missing:
            raise XtlunetError(f"dataset.json lacks {', '.join(missing)}", path=path,
                               fix="add the missing keys (see documentation/dataset_format.md)")
        task = d.get("task", "segmentation")
        if task not in TASKS:
            raise XtlunetError(f"unknown task '{task}'{did_you_mean(task, TASKS)}", path=path,
                               fix="set \"task\" to 'segmentation' or 'classification'")
        try:
            channels = {int(k): str(v) for k, v in d["channel_names"].items()}
            labels = {str(k): _label_value(v) for k, v in d["labels"].items()}
            num_training = int(d["numTraining"])
        except (AttributeError, TypeError, ValueError) as exc:
            raise XtlunetError(f"malformed channel_names/labels/numTraining ({exc})", path=path,
                               fix="channel_names: {\"0\": \"T2\"}, labels: {\"background\": 0, ...}, numTraining: int") from None
        if sorted(channels) != list(range(len(channels))) or not channels:
            raise XtlunetError("channel_names keys must be 0..N-1", path=path, fix="number the channels \"0\", \"1\", ...")
        ending = str(d["file_ending"])
        if not ending.startswith("."):
            raise XtlunetError(f"file_ending '{ending}' must start with a dot", path=path, fix="e.g. \".nii.gz\"")
        classes: dict[str, int] = {}
        findings = None
        if task == "classification":
            if "classes" not in d or "findings" not in d:
                raise XtlunetError("a classification dataset.json needs \"classes\" and \"findings\"", path=path,
                                   fix="add \"classes\": {\"benign\": 0, \"malignant\": 1} and \"findings\": \"findings.csv\"")
            try:
                classes = {str(k): int(v) for k, v in d["classes"].items()}
            except (AttributeError, TypeError, ValueError):
                raise XtlunetError("\"classes\" must map class names to integers", path=path,
                                   fix="e.g. \"classes\": {\"benign\": 0, \"malignant\": 1}") from None
            if sorted(classes.values()) != list(range(len(classes))) or len(classes) < 2:
                raise XtlunetError("\"classes\" values must be 0..K-1 with K ≥ 2", path=path, fix="number classes from 0")
            findings = str(d["findings"])
        elif "background" not in labels or labels["background"] != 0:
            raise XtlunetError("labels must contain \"background\": 0", path=path, fix="add \"background\": 0 to labels")
        elif sorted(set(labels.values())) != list(range(len(set(labels.values())))):
            raise XtlunetError(f"label values {sorted(set(labels.values()))} are not consecutive 0..K-1", path=path,
                               fix="renumber the labels (and the masks) 0, 1, 2, ...")
        return cls(root=root, channel_names=channels, labels=labels, num_training=num_training,
                   file_ending=ending, task=task, classes=classes, findings_file=findings, raw=d)

    def label_values(self) -> list[int]:
        """Sorted integer label values declared in dataset.json."""
        return sorted(set(self.labels.values()))

    def foreground_labels(self) -> list[int]:
        """Declared label values other than background."""
        return [v for v in self.label_values() if v != 0]

    def cases(self, split: str = "Tr") -> list[Case]:
        """Cases of imagesTr (split='Tr') or imagesTs ('Ts'), sorted by id; missing channels are kept as paths."""
        folder = self.root / f"images{split}"
        if not folder.is_dir():
            if split == "Ts":
                return []
            raise XtlunetError(f"folder images{split} is missing", path=folder, fix="put the training images there")
        return discover_cases(folder, self.file_ending, self.num_channels,
                              self.root / f"labels{split}" if split == "Tr" and not self.is_classification else None)


_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


def channel_of(filename: str, file_ending: str) -> tuple[str, int] | None:
    """(case id, channel index) of a channel file name CASE_XXXX<file_ending>, or None if it is not one."""
    m = _CHANNEL.match(filename[: -len(file_ending)]) if filename.endswith(file_ending) else None
    return (m.group(1), int(m.group(2))) if m else None


def name_problem(filename: str, ending: str, channel: bool = True) -> tuple[str, str] | None:
    """(what, fix) when a file name is not CASE_XXXX<ending> (a channel file) or CASE<ending> (a label map)."""
    pattern = f"CASE_XXXX{ending}" if channel else f"CASE{ending}"
    if (reason := ending_problem(filename, ending)) is not None:
        written = written_ending(filename)
        fix = (f"rename it to {filename[: -len(written)]}{ending}" if written.lower() == ending.lower()
               else f"save it as {pattern}")
        return f"file name does not match {pattern}: {reason}", fix
    if not channel or channel_of(filename, ending):
        return None
    return f"file name does not match {pattern} (XXXX: 4-digit channel index)", f"rename it to {pattern}"


def ending_problem(filename: str, ending: str) -> str | None:
    """Why a file name does not end in dataset.json's file_ending; None when it does.

    Endings are matched exactly, letter case included: case ids, label and output names are built from the
    file_ending, so 'X.NII.GZ' would be another name than 'X.nii.gz' on a case-sensitive file system.
    """
    if filename.endswith(ending):
        return None
    written = written_ending(filename)
    if written.lower() == ending.lower():
        return (f"its ending {written} differs from dataset.json's file_ending {ending} in letter case only, and "
                "endings are matched exactly")
    if not written:
        return f"it has no ending (dataset.json's file_ending is {ending})"
    return f"it ends in {written}, not in dataset.json's file_ending {ending}"


def written_ending(filename: str) -> str:
    """A file name's ending as written, letter case kept: a known image ending ('.NII.GZ'), else its last suffix."""
    low = filename.lower()
    known = next((e for e in SUPPORTED_ENDINGS if low.endswith(e)), None)
    return filename[-len(known):] if known else Path(filename).suffix


def discover_cases(folder: Path, ending: str, num_channels: int, label_folder: Path | None = None) -> list[Case]:
    """Group `CASE_XXXX<ending>` files of a folder into cases (expected channel paths, present or not)."""
    ids: set[str] = set()
    for f in folder.iterdir():
        channel = None if f.name.startswith(".") else channel_of(f.name, ending)
        if channel:
            ids.add(channel[0])
    cases = []
    for cid in sorted(ids):
        files = [folder / f"{cid}_{c:04d}{ending}" for c in range(num_channels)]
        label = label_folder / f"{cid}{ending}" if label_folder is not None else None
        cases.append(Case(cid, files, label))
    return cases


def find_dataset(dataset: str | int, raw: Path) -> Path:
    """The folder of a dataset given by id (1, '001') or full name ('Dataset001_X') under a data root."""
    if not raw.is_dir():
        from xtlunet.paths import root_of

        var = (root_of(raw) or ("the data root", raw))[0]
        raise XtlunetError(f"data root {var} does not exist", path=raw, fix=f"create it or point {var} elsewhere")
    names = sorted(p.name for p in raw.iterdir() if p.is_dir() and _DATASET_DIR.match(p.name))
    text = str(dataset)
    if text in names:
        return raw / text
    if text.isdigit():
        hits = [n for n in names if int(_DATASET_DIR.match(n).group(1)) == int(text)]
        if len(hits) == 1:
            return raw / hits[0]
        if len(hits) > 1:
            raise XtlunetError(f"dataset id {text} is ambiguous: {', '.join(hits)}", path=raw, fix="give the full name")
    raise XtlunetError(f"unknown dataset '{text}'{did_you_mean(text, names)}", path=raw,
                       fix=f"available: {', '.join(names) or 'none'}; create one with 'xtlunet example'")


def _label_value(v: Any) -> int:
    """A label value; region-based label lists are not supported."""
    if isinstance(v, (list, tuple)):
        raise ValueError("region-based labels (lists) are not supported")
    return int(v)

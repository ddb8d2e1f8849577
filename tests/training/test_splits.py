"""Five-fold splits: seeded, grouped by patient, stratified, user splits honoured."""
import json

import pytest

from xtlunet.errors import XtlunetError
from xtlunet.training.splits import case_groups_and_labels, fold_cases, load_or_create_splits, make_splits


def test_plain_kfold_is_deterministic_and_partitions():
    ids = [f"c{i:02d}" for i in range(23)]
    a, b = make_splits(ids), make_splits(list(reversed(ids)))
    assert a == b and len(a) == 5
    vals = [c for s in a for c in s["val"]]
    assert sorted(vals) == sorted(ids)
    for s in a:
        assert set(s["train"]).isdisjoint(s["val"]) and len(s["train"]) + len(s["val"]) == 23


def test_grouped_stratified_no_patient_leak():
    ids = [f"c{i:02d}" for i in range(30)]
    groups = {c: f"P{i // 3}" for i, c in enumerate(ids)}
    labels = {c: (i // 3) % 2 for i, c in enumerate(ids)}
    for s in make_splits(ids, groups, labels):
        assert {groups[c] for c in s["train"]}.isdisjoint({groups[c] for c in s["val"]})
        assert {labels[c] for c in s["val"]} == {0, 1}


def test_too_few_patients():
    with pytest.raises(XtlunetError, match="cannot make 5 folds"):
        make_splits(["a", "b", "c", "d", "e", "f"], {c: "P1" if c < "d" else "P2" for c in "abcdef"})


def test_prostate_example_splits_leak_nothing(examples):
    from xtlunet.dataset.findings import read_findings
    from xtlunet.dataset.spec import DatasetSpec

    spec = DatasetSpec.load(examples["raw"] / "Dataset502_Prostate")
    groups, labels = case_groups_and_labels(spec.findings_path, spec.classes)
    patients = {f.case_id: f.patient_id for f in read_findings(spec.findings_path, spec.classes)}
    assert len(set(patients.values())) < len(patients)   # some patients have several studies
    splits = load_or_create_splits(examples["preprocessed"], sorted(patients), spec.findings_path, spec.classes)
    for s in splits:
        assert {patients[c] for c in s["train"]}.isdisjoint({patients[c] for c in s["val"]})
    assert json.loads((examples["preprocessed"] / "splits_final.json").read_text()) == splits


def test_user_splits_are_honoured_and_checked(tmp_path):
    user = [{"train": ["a", "b"], "val": ["c"]}]
    (tmp_path / "splits_final.json").write_text(json.dumps(user))
    assert load_or_create_splits(tmp_path, ["a", "b", "c"], None, {}) == user
    assert fold_cases(user, 0, ["a", "b", "c"]) == (["a", "b"], ["c"])
    assert fold_cases(user, "all", ["c", "a", "b"]) == (["a", "b", "c"], [])
    with pytest.raises(XtlunetError, match="fold 3 does not exist"):
        fold_cases(user, 3, ["a"])
    (tmp_path / "splits_final.json").write_text(json.dumps([{"train": ["a", "zz"], "val": ["c"]}]))
    with pytest.raises(XtlunetError, match="unknown cases"):
        load_or_create_splits(tmp_path, ["a", "b", "c"], None, {})


@pytest.mark.parametrize("fold, needle", [
    ({"train": [["a"], "b"], "val": ["c"]}, "fold 0's \"train\" must be a list of case ids"),
    ({"train": ["a", 3], "val": ["c"]}, "fold 0's \"train\" must be a list of case ids"),
    ({"train": ["a", "b"], "val": "c"}, "fold 0's \"val\" must be a list of case ids"),
])
def test_user_split_fields_of_the_wrong_type_are_refused(tmp_path, fold, needle):
    (tmp_path / "splits_final.json").write_text(json.dumps([fold]))
    with pytest.raises(XtlunetError, match=needle):
        load_or_create_splits(tmp_path, ["a", "b", "c"], None, {})

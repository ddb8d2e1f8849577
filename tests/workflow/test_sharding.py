"""Job-array parts (`--num-parts N --part-id K`) of plan-and-preprocess and predict: the parts, run in any order,
write exactly the files of one whole run."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import TINY_GB, use_roots
from xtlunet.cli import main
from xtlunet.utils.atomic import write_csv
from xtlunet.utils.sharding import WHOLE, Part, make_part, part_file, write_part_table

BRAIN = "Dataset501_BrainMS"
PLAN = ["plan-and-preprocess", "-d", "501", "-c", "3d_fullres", "--gpu-memory-gb", TINY_GB]
TRAIN = ["train", "501", "3d_fullres", "0", "--epochs", "1", "--iters-per-epoch", "1", "--val-iters", "1",
         "--device", "cpu", "--no-final-validation"]
PREDICT = ["predict", "-d", "501", "-c", "3d_fullres", "--no-tta", "--step-size", "1", "--device", "cpu"]


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under folder (hidden ones too) by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _parts(argv: list[str], n: int, k: int) -> list[str]:
    """argv of part k of n."""
    return [*argv, "--num-parts", str(n), "--part-id", str(k)]


@pytest.fixture(scope="module")
def brain(example_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The brain example preprocessed by one whole run (its files kept) and a one-fold model trained on it."""
    base = tmp_path_factory.mktemp("sharding")
    roots = {kind: base / kind for kind in ("raw", "preprocessed", "results")}
    shutil.copytree(example_cache / BRAIN, roots["raw"] / BRAIN)
    roots["preprocessed"].mkdir()
    with pytest.MonkeyPatch.context() as mp:
        use_roots(mp, roots)
        assert main(["-q", *PLAN]) == 0
        whole = _files(roots["preprocessed"])        # before training adds splits_final.json
        assert main(["-q", *TRAIN]) == 0
    ids = sorted(p.name[:-7] for p in (roots["raw"] / BRAIN / "labelsTr").glob("*.nii.gz"))
    return SimpleNamespace(roots=roots, whole=whole, ids=ids)


def test_parts_are_disjoint_cover_every_case_and_follow_the_sorted_order():
    ids = [f"case_{i:02d}" for i in (7, 3, 11, 0, 5, 9, 1, 2, 10, 4, 6, 8)]
    for n in range(1, 6):
        parts = [Part(k, n).select(ids, key=str) for k in range(n)]
        together = [c for part in parts for c in part]
        assert sorted(together) == sorted(ids) and len(set(together)) == len(ids)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert Part(1, 3).select(ids, key=str) == ["case_01", "case_04", "case_07", "case_10"]
    cases = [SimpleNamespace(case_id=c) for c in ids]               # cases are selected by their case_id
    assert [c.case_id for c in Part(0, 5).select(cases)] == ["case_00", "case_05", "case_10"]
    assert make_part(None, None) is WHOLE and WHOLE.select(ids, key=str) == sorted(ids)
    assert make_part(4, 3) == Part(3, 4)


@pytest.mark.parametrize("command, options, needle", [
    (PLAN, ["--num-parts", "3"], "error: --num-parts needs --part-id — fix: give both"),
    (PLAN, ["--part-id", "0"], "error: --part-id needs --num-parts"),
    (PREDICT, ["--num-parts", "2", "--part-id", "2"], "error: --part-id 2 is out of range for --num-parts 2 (parts "
                                                       "are numbered 0–1) — fix: give --part-id 0–1"),
    (PLAN, ["--num-parts", "0", "--part-id", "0"], "error: argument --num-parts: must be a whole number ≥ 1"),
    (PREDICT, ["--num-parts", "2", "--part-id", "-1"], "error: argument --part-id: must be a whole number ≥ 0"),
    (PREDICT, ["--num-parts", "two", "--part-id", "0"], "error: argument --num-parts: must be a whole number, got"),
])
def test_bad_part_options_stop_with_one_line(roots, capsys, command, options, needle):
    argv = [*command, *(["-i", "in", "-o", "out"] if command[0] == "predict" else []), *options]
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"xtlunet {command[0]}: error: ") and needle in last, last
    if "argument" not in needle:                                     # ours: the whole message is that one line
        assert err.count("\n") == 1
    assert not [f for p in roots.values() for f in p.iterdir()]     # nothing was read or written


def test_parts_in_reverse_order_write_the_files_of_one_whole_run(brain, tmp_path, monkeypatch):
    pre = tmp_path / "preprocessed"
    pre.mkdir()
    use_roots(monkeypatch, {**brain.roots, "preprocessed": pre})
    data = pre / BRAIN / "xtlunetPlans_3d_fullres"
    done: list[str] = []
    for k in (2, 1, 0):
        assert main(["-q", *_parts(PLAN, 3, k)]) == 0
        done += brain.ids[k::3]                                       # sorted case i belongs to part i mod 3
        assert sorted(p.name[:-4] for p in data.glob("*.npy") if "_seg" not in p.name) == sorted(done)
        assert (data / "configuration.json").is_file() == (k == 0)   # the manifest waits for the last part
    assert _files(pre) == brain.whole                                 # byte for byte, no lock or temp file left


def test_parts_running_at_once_write_the_files_of_one_whole_run(brain, tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from xtlunet.plan_and_preprocess import plan_and_preprocess

    pre = tmp_path / "preprocessed"
    pre.mkdir()
    use_roots(monkeypatch, {**brain.roots, "preprocessed": pre})
    with ThreadPoolExecutor(3) as pool:                               # they meet at the lock of the dataset folder
        jobs = [pool.submit(plan_and_preprocess, "501", ["3d_fullres"], gpu_memory_gb=float(TINY_GB), part=Part(k, 3))
                for k in range(3)]
        plans = [job.result() for job in jobs]
    assert plans[0] == plans[1] == plans[2] and _files(pre) == brain.whole


def test_a_part_refuses_a_plan_or_fingerprint_made_with_other_settings(brain, tmp_path, monkeypatch, capsys):
    pre = tmp_path / "preprocessed"
    pre.mkdir()
    use_roots(monkeypatch, {**brain.roots, "preprocessed": pre})
    assert main(["-q", *PLAN, "--no-pp"]) == 0                        # planned once, then the parts
    before = _files(pre)
    for options, needle in (
            (["--gpu-memory-gb", "0.2"], "xtlunetPlans.json was made with other settings than this part's (differs "
                                         "in configurations.3d_fullres."),
            (["--gpu-memory-gb", "0.2"], "fix: run every part with the same options; to re-plan, run once without "
                                         "--num-parts (xtlunet plan-and-preprocess -d Dataset501_BrainMS --no-pp"),
            (["--reorient"], "fingerprint.json describes other training cases or other settings (e.g. --reorient)"),
            (["--overwrite"], "--overwrite cannot be combined with --num-parts")):
        assert main(["-q", *_parts([*PLAN, *options], 2, 1)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
        assert "Traceback" not in err and _files(pre) == before       # nothing overwritten, no case written
    assert main(_parts(PLAN, 2, 1)) == 0                              # the same settings reuse the plan
    assert _files(pre)[f"{BRAIN}/xtlunetPlans.json"] == before[f"{BRAIN}/xtlunetPlans.json"]


def test_predict_parts_write_the_files_of_one_whole_run(brain, tmp_path, monkeypatch, capsys):
    use_roots(monkeypatch, brain.roots)
    src = brain.roots["raw"] / BRAIN / "imagesTs"
    tests = sorted({p.name[:-12] for p in src.glob("*_0000.nii.gz")})
    assert main(["-q", *PREDICT, "-i", str(src), "-o", str(tmp_path / "whole")]) == 0
    out = tmp_path / "parts"
    assert main(["-q", *_parts([*PREDICT, "-i", str(src), "-o", str(out)], 2, 1)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{c}.nii.gz" for c in tests[1::2]]
    assert main(["-q", *_parts([*PREDICT, "-i", str(src), "-o", str(out)], 2, 0)]) == 0
    assert f"{len(tests[0::2])} cases of part 0 of 2 predicted" in capsys.readouterr().out
    whole = _files(tmp_path / "whole")
    assert sorted(whole) == [f"{c}.nii.gz" for c in tests] and _files(out) == whole


def test_part_tables_combine_into_the_whole_runs_table_once_every_part_is_there(tmp_path, caplog):
    ids = ["c0", "c1", "c2", "c3", "c4"]
    columns = ["case_id", "finding_id", "p_benign", "p_malignant"]
    rows = [{"case_id": c, "finding_id": f"f{j}", "p_benign": 0.25 * j, "p_malignant": 1 - 0.25 * j}
            for c in ("c4", "c0", "c2", "c1") for j in (2, 1)]                 # c3 has no finding
    rows.sort(key=lambda r: r["case_id"])                              # a whole run writes the cases in order
    whole = write_csv(rows, tmp_path / "whole" / "predictions.csv", columns)
    out = tmp_path / "parts" / "predictions.csv"
    for k in (2, 0, 1):
        part = Part(k, 3)
        mine = set(part.select(ids, key=str))
        written = write_part_table([r for r in rows if r["case_id"] in mine], out, columns, part, ids)
        assert part_file(out, part).is_file() and (written == out) == (k == 1) and out.is_file() == (k == 1)
    assert out.read_bytes() == whole.read_bytes()
    # a part file of another split (here: part 0 holding part 1's case) is never combined
    out.unlink()
    write_csv([{"case_id": "c1", "finding_id": "f1"}], part_file(out, Part(0, 3)), columns)
    with caplog.at_level(logging.WARNING, logger="xtlunet"):
        assert write_part_table([], out, columns, Part(2, 3), ids) is None
    assert not out.exists() and "predictions.part-0-of-3.csv is not from this run (cases c1" in caplog.text


def test_num_gpus_under_torchrun_is_refused(roots, monkeypatch, capsys):
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    assert main(["train", "501", "3d_fullres", "0", "--num-gpus", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--num-gpus 2 under torchrun, which started 2 processes" in err
    assert "fix: omit --num-gpus" in err

"""Messages that must not mislead: plurals, JSON without NaN, -q hides every bar, and a failure printed while a bar
is drawn starts a line of its own."""
from __future__ import annotations

import json
import logging
import math
import sys

import numpy as np
import pytest
from tqdm import tqdm

from xtlunet.cli import main
from xtlunet.errors import noun, plural
from xtlunet.evaluation.summary import CaseScores, FindingScores, ValidationSummary
from xtlunet.utils.atomic import json_ready, read_json, write_json
from xtlunet.utils.console import BarSafeHandler, is_quiet, progress_bar, quiet_mode
from xtlunet.utils.parallel import map_cases


def test_plural():
    assert [plural(n, "problem") for n in (0, 1, 2)] == ["0 problems", "1 problem", "2 problems"]
    assert plural(1, "process", "processes") == "1 process" and plural(3, "process", "processes") == "3 processes"
    assert noun(1, "fold") == "fold" and noun(2, "fold") == "folds"


def _strict_loads(text: str):
    """json.loads that refuses NaN / Infinity (as every other JSON reader does)."""
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_json_has_null_where_a_number_is_undefined(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"dice": math.nan, "hd95": [math.inf, -math.inf, 1.5], "auc": np.float32("nan"),
                      "n": np.int64(3), "arr": np.array([np.nan, 2.0]), "ok": True, "none": None})
    doc = _strict_loads(path.read_text())
    assert doc == {"dice": None, "hd95": [None, None, 1.5], "auc": None, "n": 3, "arr": [None, 2.0], "ok": True,
                   "none": None}


def test_summary_nan_round_trips_as_null(tmp_path):
    from xtlunet.evaluation.segmentation_metrics import evaluate_case

    empty, lesion = np.zeros((4, 8, 8), np.uint8), np.zeros((4, 8, 8), np.uint8)
    lesion[1:3, 2:5, 2:5] = 1
    cases = [CaseScores("a", evaluate_case(empty, empty, (1, 1, 1), [1])),      # Dice, HD95 undefined: NaN
             CaseScores("b", evaluate_case(lesion, lesion, (1, 1, 1), [1]))]
    summary = ValidationSummary(task="segmentation", labels=[1], cases=cases)
    path = summary.save(tmp_path / "summary.json")
    raw = _strict_loads(path.read_text())
    assert raw["cases"][0]["metrics"]["1"]["dice"] is None and raw["cases"][0]["metrics"]["1"]["n_ref_lesions"] == 0
    assert raw["per_class"]["1"]["dice"] == {"mean": 1.0, "median": 1.0, "n": 1}
    back = ValidationSummary.load(path)
    assert math.isnan(back.cases[0].metrics[1]["dice"]) and back.cases[1].metrics[1]["dice"] == 1.0
    assert back.per_class() == summary.per_class()
    assert back.cases[0].metrics[1]["n_ref_lesions"] == 0 and isinstance(back.cases[0].metrics[1]["n_ref_lesions"],
                                                                          int)
    assert json_ready(back.to_json()) == read_json(path)             # writing it again gives the same file
    finding = FindingScores.from_json({"case_id": "c", "finding_id": "1", "label": 1, "probabilities": [None, 1.0]})
    assert math.isnan(finding.probabilities[0]) and finding.probabilities[1] == 1.0


def test_quiet_hides_every_bar_made_through_progress_bar():
    with quiet_mode(True):
        assert is_quiet() and progress_bar(range(3), disable=False).disable
    assert not is_quiet() and not progress_bar(range(3), file=sys.stderr).disable


def test_quiet_is_set_for_the_command_only(roots, monkeypatch):
    import xtlunet.cli as cli

    seen = []
    monkeypatch.setattr(cli, "_cmd_example", lambda a: seen.append(is_quiet()))
    assert main(["-q", "example", "brain-ms"]) == 0 and main(["example", "brain-ms"]) == 0
    assert seen == [True, False] and not is_quiet()


def test_a_message_logged_during_a_bar_gets_its_own_line(capsys):
    handler = BarSafeHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("xtlunet.test_messages")
    log.addHandler(handler)
    log.propagate = False
    try:
        with tqdm(range(4), desc="predict", file=sys.stderr, mininterval=0, miniters=1) as bar:
            for i in bar:
                if i == 2:
                    log.error("case case_0002 failed: broken header")
    finally:
        log.removeHandler(handler)
    err = capsys.readouterr().err
    line = next(line for line in err.split("\n") if "case_0002" in line)
    assert line.rsplit("\r", 1)[-1] == "case case_0002 failed: broken header"


def _fail_on_two(x: int) -> int:
    """A job that fails for one case."""
    if x == 2:
        raise ValueError("case 2 is broken")
    return x


def test_map_cases_closes_its_bar_before_the_error_is_reported():
    with pytest.raises(ValueError, match="case 2 is broken") as failure:
        map_cases(_fail_on_two, range(5), desc="preprocess")
    # while the error is being reported (its traceback alive), no bar is left to share its line
    assert failure.traceback and not [b for b in tqdm._instances if b.desc == "preprocess"]

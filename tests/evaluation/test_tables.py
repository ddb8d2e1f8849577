"""CSV and Markdown tables."""
import csv

from xtlunet.evaluation.tables import markdown_table, write_csv


def test_write_csv_round_trips_with_union_columns(tmp_path):
    rows = [{"case": "a", "dice": 0.5}, {"case": "b|c", "dice": float("nan"), "hd95": 1.25}]
    path = write_csv(rows, tmp_path / "out" / "metrics.csv")
    with open(path, newline="") as fh:
        back = list(csv.DictReader(fh))
    assert back == [{"case": "a", "dice": "0.5", "hd95": ""}, {"case": "b|c", "dice": "nan", "hd95": "1.25"}]
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]


def test_write_csv_with_chosen_columns_drops_the_rest(tmp_path):
    path = write_csv([{"case": "a", "dice": 0.5, "iou": 0.3}], tmp_path / "m.csv", columns=["dice", "case"])
    assert path.read_text().splitlines() == ["dice,case", "0.5,a"]


def test_markdown_table_formats_floats_and_escapes_pipes():
    rows = [{"arm": "XTL", "auc": 0.912345, "n": 40}, {"arm": "a|b", "auc": None}]
    assert markdown_table(rows, ["arm", "auc", "n"]) == (
        "| arm | auc | n |\n|---|---|---|\n| XTL | 0.9123 | 40 |\n| a\\|b |  |  |\n")

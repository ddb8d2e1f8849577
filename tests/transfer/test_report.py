"""TransferReport: rows for every target tensor, coverage by parameter count, summary line, JSON file."""
from __future__ import annotations

import json
import re
from pathlib import Path

from xtlunet.networks.build import build_network, parameter_groups
from xtlunet.transfer import TensorRow, TransferReport, transfer_weights
from xtlunet.utils.atomic import read_json

from .helpers import tiny_description, to_3d


def _resnet_report(mode: str = "inflate") -> tuple[TransferReport, object]:
    d2 = tiny_description("resnet18", in_channels=1)
    seg2 = build_network(d2, "segmentation", 2)
    seg3 = build_network(to_3d(d2, 3, in_channels=2), "segmentation", 3)
    return transfer_weights(seg2.state_dict(), seg3, mode=mode), seg3


def test_rows_cover_every_target_tensor_and_coverage_counts_parameters() -> None:
    report, seg3 = _resnet_report()
    assert [r.name for r in report.rows] == list(seg3.state_dict())
    assert report.coverage == {"encoder": 1.0, "decoder": 0.0, "head": 0.0}
    groups = parameter_groups(seg3)
    params = dict(seg3.named_parameters())
    for g in ("encoder", "decoder", "head"):   # same grouping as the networks module; buffers excluded
        assert report.parameters[g] == [sum(params[n].numel() for n in groups[g]) if g == "encoder" else 0,
                                        sum(params[n].numel() for n in groups[g])]
    buffers = {n for n, _ in seg3.named_buffers()}
    assert {r.name for r in report.rows if not r.is_parameter} == buffers
    for row in report.rows:
        assert row.status in ("loaded", "converted", "channel-adapted", "new")
        if row.status == "new":
            assert row.source_key is None and row.reason
        else:
            assert row.source_key == row.name and row.rule
    first = report.rows[0]
    assert (first.name, first.status, first.rule) == ("encoder.stages.0.blocks.0.conv.weight", "channel-adapted",
                                                      "repeat-1-to-2+inflate")
    assert first.source_shape == [4, 1, 7, 7] and first.target_shape == [4, 2, 3, 7, 7]


def test_summary_line() -> None:
    report, _ = _resnet_report("center")
    c = report.counts()
    line = report.summary()
    assert "\n" not in line
    assert re.fullmatch(r"transfer center: encoder 100\.0% \([\d.]+k/[\d.]+k params\), decoder 0\.0%, head 0\.0%; "
                        r"\d+ loaded, \d+ converted, 1 channel-adapted, 0 skipped, \d+ new; \d+ unused source keys",
                        line), line
    assert f"{c['converted']} converted" in line and f"{c['new']} new" in line
    assert f"{len(report.unused)} unused source keys" in line
    one = TransferReport("inflate", "x", "xtlunet", unused=[])
    one.compute_coverage()
    assert one.summary().endswith("0 unused source keys")


def test_json_round_trip_and_atomic_save(tmp_path: Path) -> None:
    report, _ = _resnet_report()
    path = tmp_path / "fold_0" / "transfer_report.json"
    report.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["transfer_report.json"]   # no temp file left behind
    data = read_json(path)
    assert data["coverage"] == {"encoder": 1.0, "decoder": 0.0, "head": 0.0}
    assert data["rows"][0]["status"] == "channel-adapted"
    back = TransferReport.from_json(data)
    assert back == report
    assert json.loads(json.dumps(back.to_json())) == data


def test_row_numel() -> None:
    assert TensorRow("a", "new", [2, 3, 4]).numel == 24
    assert TensorRow("a", "new", []).numel == 1

"""The report in a real browser (headless Chromium): it loads without errors, every image decodes, the per-case
table sorts when its header is clicked; a screenshot is kept as a test artefact. Skipped without Chromium
(scripts/test.sh installs Debian's `chromium` where it can; XTLUNET_CHROMIUM names another binary)."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from xtlunet.report.build import ReportOptions, write_report

CONSOLE_ERROR = re.compile(r"CONSOLE.*(Uncaught|Error)|:ERROR:CONSOLE")


def chromium() -> str:
    """The Chromium binary, or skip the test saying how to get one."""
    found = os.environ.get("XTLUNET_CHROMIUM") or next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(n)), None)
    if not found:
        pytest.skip("no Chromium found: bash scripts/test.sh installs Debian's chromium (as root, with apt-get), "
                    "or set XTLUNET_CHROMIUM to a Chrome/Chromium binary")
    return found


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with its own profile folder, console messages logged to stderr."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
           "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def self_check(page: Path, profile: Path) -> tuple[dict[str, Any], list[str]]:
    """(the page's self-check result, console error lines) of page?selfcheck, its DOM dumped after load."""
    done = run_chromium(["--virtual-time-budget=15000", "--dump-dom", page.as_uri() + "?selfcheck=1"], profile)
    found = re.search(r'<pre id="selfcheck">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no self-check result in the dumped page (exit {done.returncode}): {done.stderr[-800:]}"
    return json.loads(html.unescape(found.group(1))), [ln for ln in done.stderr.splitlines()
                                                       if CONSOLE_ERROR.search(ln)]


def test_report_loads_decodes_and_sorts_in_chromium(seg_tree, tmp_path):
    chromium()
    page = write_report(601, "3d_fullres", tmp_path / "report.html", ReportOptions(n_boot=100))
    n_images = page.read_text().count("<img ")
    result, console = self_check(page, tmp_path / "profile")
    assert result["errors"] == [] and console == []
    assert result["images"] == n_images == 13 and result["broken"] == []
    order = result["sorted"]
    assert order["column"] == "ScratchTrainer Dice"
    assert order["ascending"] == sorted(order["ascending"]) and len(order["ascending"]) == 4
    assert order["descending"] == sorted(order["ascending"], reverse=True)
    assert order["ascending"] != order["descending"]

    shot = tmp_path / "report_screenshot.png"
    run_chromium([f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars", page.as_uri()],
                 tmp_path / "profile")
    pixels = imread(shot)
    assert pixels.shape[:2] == (2400, 1280) and np.std(pixels[..., :3]) > 0.05   # drawn, not a blank page
    print(f"report screenshot: {shot}")


def test_the_browser_check_sees_a_broken_image_and_a_script_error(seg_tree, tmp_path):
    chromium()
    good = write_report(601, "3d_fullres", tmp_path / "report.html", ReportOptions(n_boot=50, qc=False)).read_text()
    broken = re.sub(r'src="data:image/png;base64,[^"]{40}', 'src="data:image/png;base64,AAAA', good, count=1)
    broken = broken.replace("</main>", "<script>notAFunction();</script></main>")
    page = tmp_path / "broken.html"
    page.write_text(broken)
    result, _ = self_check(page, tmp_path / "profile")
    assert len(result["broken"]) == 1
    assert any("notAFunction" in e for e in result["errors"])

"""The HTML report in a real browser: headless Chromium opens report.html, unchanged, inside a
test page's iframe, and reports what it rendered (every image decoded with a natural size,
every table laid out); a screenshot of the page itself must show more than a blank page.

Marked ``browser`` (not in the default run): CI installs Debian's ``chromium`` and runs
``pytest -m browser``. Without a Chromium on PATH the tests skip and say so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_results import stream_rows, suite_rows, write_dir

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
PROBE = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>
<pre id="result">pending</pre>
<iframe id="page" src="report.html" style="width:1280px;height:900px"></iframe>
<script>
document.getElementById("page").addEventListener("load", function () {
  var out = {};
  var d = this.contentDocument;
  if (!d) { out.error = "the report page could not be read"; } else {
    out.title = d.title;
    out.images = Array.from(d.images).map(function (i) {
      return {complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
              shown: i.getBoundingClientRect().width, alt: i.alt};
    });
    out.tables = Array.from(d.querySelectorAll("table")).map(function (t) {
      return {rows: t.rows.length, cells: t.rows.length ? t.rows[0].cells.length : 0,
              width: t.getBoundingClientRect().width};
    });
    out.scripts = d.querySelectorAll("script").length;
  }
  document.getElementById("result").textContent = JSON.stringify(out);
});
</script></body></html>
"""


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on PATH (CI installs Debian's chromium: apt-get install -y "
                "chromium); the HTML report was not opened in a browser")


def run_browser(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from seqbench.results.report import write_report

    root = tmp_path_factory.mktemp("browser")
    results = write_dir(root / "results", suite_rows() + stream_rows())
    return write_report(results, root / "report", n_boot=200, formats=("png",))


def test_every_figure_and_table_of_the_report_renders_in_chromium(report, tmp_path):
    exe = browser()
    probe = report.parent / "probe.html"
    probe.write_text(PROBE, encoding="utf-8")
    done = run_browser(exe, tmp_path / "profile", "--allow-file-access-from-files",
                       "--virtual-time-budget=15000", "--dump-dom", probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, re.S)
    assert found and found.group(1) != "pending", done.stdout[-2000:]
    page = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert "error" not in page, page
    html = report.read_text()
    assert len(page["images"]) == html.count("<img") == 5
    for image in page["images"]:  # decoded, with a real size, and shown on the page
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, image
        assert image["shown"] > 100, image
    assert len(page["tables"]) == html.count("<table") and len(page["tables"]) >= 10
    for table in page["tables"]:
        assert table["rows"] >= 2 and table["cells"] >= 2 and table["width"] > 50, table
    assert page["scripts"] == 0  # the report itself runs nothing


def test_a_screenshot_of_the_report_is_not_blank(report, tmp_path):
    from matplotlib.image import imread

    exe = browser()
    shot = tmp_path / "page.png"
    done = run_browser(exe, tmp_path / "profile", "--window-size=1280,2400",
                       "--hide-scrollbars", f"--screenshot={shot}", report.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = imread(shot)[..., :3]  # (H, W, 3) floats
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1200
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 200  # text, tables and figures, not one background colour
    assert (pixels.mean(axis=-1) < 0.5).mean() > 0.005  # some dark ink (text, lines)

"""The report page in a real headless browser (Debian's chromium; `make test` installs it): every image
loads and no link or source leaves the report folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from orchestration.report import build
from tests.report_support import plain_rows, rich_rows

# Test-only probe, injected into a copy of the page in the same folder (so relative links resolve the same):
# after load it lists every <img> with its natural width. The report itself has no script.
PROBE = (
    '<script>window.addEventListener("load",function(){var o=[];for(var i of document.images)'
    '{o.push(i.getAttribute("src")+"\\t"+i.naturalWidth)}var p=document.createElement("pre");'
    'p.id="nf-probe";p.textContent=o.join("\\n");document.body.appendChild(p)})</script>'
)


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install -y chromium)")
    return exe


def _dump_dom(page: Path, tmp: Path) -> str:
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        page.as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def _image_widths(report: Path, tmp: Path) -> dict[str, int]:
    probe = report / "nf-probe.html"
    probe.write_text(
        (report / "index.html").read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8"
    )
    try:
        dom = _dump_dom(probe, tmp)
    finally:
        probe.unlink()
    m = re.search(r'<pre id="nf-probe">(.*?)</pre>', dom, re.DOTALL)
    assert m, "the page did not finish loading in the browser"
    return {src: int(w) for src, w in (line.split("\t") for line in m.group(1).splitlines() if line)}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.imgs = 0

    def handle_starttag(self, tag, attrs):
        self.imgs += tag == "img"
        self.urls += [v for k, v in attrs if k in ("href", "src", "srcset", "data", "action", "poster") and v]


@pytest.mark.parametrize("rows", [plain_rows, rich_rows], ids=["plain", "rich"])
def test_every_image_loads_and_links_stay_inside(rows, tmp_path):
    report = tmp_path / "report"
    build.build_report(
        rows(),
        report,
        {"name": "browser", "models": ["resnet18", "vgg11"]},
        missing=["eval: 1 of 5 not done (1 pending): x"],
    )
    html = (report / "index.html").read_text(encoding="utf-8")
    links = _Links()
    links.feed(html)
    assert links.imgs >= 3
    widths = _image_widths(report, tmp_path)
    assert len(widths) == links.imgs  # the browser saw every <img> of the page
    assert all(w > 0 for w in widths.values()), widths
    assert "<link" not in html and "@import" not in html and "url(" not in html  # no external style or font
    root = report.resolve()
    for url in links.urls:
        u = urlparse(url)
        if not u.scheme and not u.netloc and u.path == "" and u.fragment:
            continue  # an anchor on the page itself
        assert not u.scheme and not u.netloc, f"{url!r} points outside the report"
        target = (report / unquote(u.path)).resolve()
        assert target.is_relative_to(root) and target.exists(), f"{url!r} does not resolve inside the report folder"


def test_probe_notices_a_broken_image(tmp_path):
    """The browser check can fail: a figure deleted after the page was written reads as width 0."""
    report = tmp_path / "report"
    res = build.build_report(plain_rows(), report)
    gone = res["sections"][0].figures[0]
    os.remove(report / gone)
    widths = _image_widths(report, tmp_path)
    assert widths[gone] == 0 and sum(w > 0 for w in widths.values()) == len(widths) - 1


def test_screenshot_renders(tmp_path):
    report = tmp_path / "report"
    build.build_report(rich_rows(), report)
    shot = tmp_path / "page.png"
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1200,2400",
        f"--screenshot={shot}",
        (report / "index.html").as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 2400)
        colours = im.convert("RGB").resize((60, 120)).getcolors(maxcolors=100000)
    assert colours is not None and len(colours) > 50  # a page with figures, not a blank or error screen

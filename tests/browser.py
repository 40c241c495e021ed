"""Headless Chromium for the tests of rendered pages: what a reader's browser loads and shows.

Debian's /usr/bin/chromium (apt-get install -y chromium; .ci/run installs it); the tests that use it
skip where it is absent. It runs offline: no network, a fresh profile each time.
"""

import re
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ABSENT = f"{CHROMIUM} is absent (Debian: apt-get install -y chromium; .ci/run installs it)"

# Run by the page once loaded: every <img> (loaded: complete with a natural width; its alt text), every table
# (cut: wider than the window, or a cell that is only "...", pandas' mark of hidden rows or columns) and the
# length of the text, written as data- attributes of <body> for --dump-dom to show.
PROBE = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((image) => !(image.complete && image.naturalWidth > 0));
  const width = document.documentElement.clientWidth;
  const tables = Array.from(document.querySelectorAll("table"));
  const cut = tables.filter((table) => table.getBoundingClientRect().right > width + 1 ||
    Array.from(table.querySelectorAll("td, th")).some((cell) => ["...", "\\u2026"].includes(cell.textContent.trim())));
  const data = document.body.dataset;
  data.images = images.length;
  data.loaded = images.length - broken.length;
  data.broken = broken.map((image) => image.getAttribute("src").slice(0, 60)).join(" ");
  data.described = images.filter((image) => (image.alt || "").length >= 20).length;
  data.tables = tables.length;
  data.cut = cut.length;
  data.text = document.body.innerText.trim().length;
});
</script>
"""


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *arguments],
                          capture_output=True, text=True, timeout=120)


def probe(page: Path, work: Path, width: int = 1280) -> dict[str, str]:
    """What a browser `width` pixels wide makes of `page` (PROBE's counts); `work` is a scratch folder.

    The probe runs in a copy of the page in `work`, whose relative links still resolve against the
    page's own folder (a <base> element), so the page's folder is left as it is.
    """
    html = page.read_text(encoding="utf-8")
    base = f'<base href="{page.parent.resolve().as_uri()}/">'
    html = re.sub(r"<head[^>]*>", lambda head: head.group(0) + base, html, count=1)
    copy = work / f"probe_{page.name}"
    copy.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = chromium(f"--window-size={width},900", "--virtual-time-budget=20000", "--dump-dom", copy.as_uri(),
                   profile=work / f"profile_{page.stem}")
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, f"no page from chromium: {dom.stderr[-2000:]}"
    return dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(0)))

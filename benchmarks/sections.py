"""Sections of a Markdown results file (RESULTS.md): each benchmark rewrites its own, in place."""

from __future__ import annotations

import re
from pathlib import Path


def update_section(path: Path, title: str, body: str) -> None:
    """Replace the `## title` section of a Markdown file with `body`; a new section goes at the end."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    heading = f"## {title}"
    section = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text, encoding="utf-8")

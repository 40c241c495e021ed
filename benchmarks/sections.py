"""Sections of a Markdown results file (RESULTS.md): each benchmark rewrites its own, in place.

Imports nothing heavy, so that scripts which need neither torch nor pandas (the mutation run) can use it.
"""

from __future__ import annotations

import re
from pathlib import Path


def update_section(path: Path, title: str, body: str, before: str | None = None) -> None:
    """Replace the `## title` section of a Markdown file with `body`. A new section goes at the end, or,
    with `before`, ahead of the first section whose title starts with it (at the end when there is none)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    heading = f"## {title}"
    section = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    follower = re.search(rf"^## {re.escape(before)}", text, re.M) if before else None
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1).rstrip() + "\n"
    elif follower:
        text = text[: follower.start()] + section + "\n" + text[follower.start() :]
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)

"""Each mutated module's mutation score, counted from mutmut's own results.

Not a test: a measurement of the tests. mutmut's configuration is `[tool.mutmut]` in pyproject.toml; after
`mutmut run` (see README.md here) this prints one Markdown row per module that has verdicts, from
`mutmut results --all true`, with the commit they describe when the checkout is clean:

    python -m benchmarks.mutation_score

The score is the share of the mutants run that the tests detected (killed, or stopped by mutmut's timeout).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

COLUMNS = ("killed", "timeout", "survived", "no tests")
HEADER = ("| module | mutants run | killed | timeout | survived | no tests | other | not run | score |\n"
          "|---|---|---|---|---|---|---|---|---|")


def tally(results: str) -> dict[str, Counter]:
    """Each module's count of each status, from `mutmut results` lines (`<module>.<function>__mutmut_<n>: <status>`,
    the function mangled by mutmut: `x_f`, or `xǁClassǁmethod`, never with a dot)."""
    counts: dict[str, Counter] = {}
    for line in results.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if "__mutmut_" in name:
            module = name.rpartition("__mutmut_")[0].rpartition(".")[0]
            counts.setdefault(module, Counter())[status] += 1
    return counts


def row(module: str, counts: Counter) -> str:
    """One module's Markdown row: mutants run, each status, those left unrun ("not checked") and the score."""
    run = sum(n for status, n in counts.items() if status != "not checked")
    other = run - sum(counts[status] for status in COLUMNS)
    score = f"{(counts['killed'] + counts['timeout']) / run:.1%}" if run else "n/a"
    cells = [f"`{module}`", run, *(counts[status] for status in COLUMNS), other, counts["not checked"], score]
    return "| " + " | ".join(map(str, cells)) + " |"


def _commit() -> str:
    """HEAD, or a warning when the working tree differs from it (its verdicts then describe no commit)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "(not a git checkout)"
    return head + (" with uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def main() -> int:
    done = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        print(f"mutmut results failed ({last}): install the `mutation` extra (pip install -e '.[mutation]') and "
              "run `mutmut run` from the repository root first", file=sys.stderr)
        return 1
    counts = {module: c for module, c in tally(done.stdout).items() if sum(c.values()) > c["not checked"]}
    if not counts:
        print("mutmut has no verdicts yet: run `mutmut run 'MODULE.*'` first", file=sys.stderr)
        return 1
    print(f"At commit {_commit()}.\n\n{HEADER}")
    for module in sorted(counts):
        print(row(module, counts[module]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

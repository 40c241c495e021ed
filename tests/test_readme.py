"""README.md and docs/: their numbers come from the result files, and what they tell a newcomer to run runs.

The marked tables and values of README.md and docs/*.md match the files they cite; the README stays
short, shows `run_all.sh --help` as the script prints it, names the test command CI runs, and its
command-line blocks run as written from a fresh folder (on the smoke preset).
"""

import importlib.util
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
readme_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_tables)


@dataclass
class Result:
    returncode: int
    stderr: str


def run(*args, capsys=None):
    code = readme_tables.main(list(args))
    return Result(code, capsys.readouterr().err if capsys else "")


def section(text: str, title: str) -> str:
    """The body of the `## title` section of a Markdown text."""
    return re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S).group(1)


def test_the_readme_and_docs_match_every_result_file_they_cite(capsys):
    assert {"README.md", "docs/results.md", "docs/reference.md"} <= {readme_tables._name(d) for d in readme_tables.documents()}
    result = run("--check", capsys=capsys)
    assert result.returncode == 0, result.stderr
    # the results moved out of the README, their numbers still from the files
    assert "<!-- table: evaluation/results/demo/sr_sr1_64_to_128.csv" in (ROOT / "docs" / "results.md").read_text(encoding="utf-8")


@pytest.fixture
def results_tree(tmp_path, monkeypatch):
    """A repository of its own for readme_tables: result files and documents under tmp_path."""
    monkeypatch.setattr(readme_tables, "ROOT", tmp_path)
    (tmp_path / "evaluation" / "results" / "demo").mkdir(parents=True)
    return tmp_path


def test_a_number_that_disagrees_with_its_file_is_found_and_rewritten(results_tree, capsys):
    pd.DataFrame({"method": ["lanczos", "SR1", "SR1 (Swin), mean"], "psnr_mean": [26.5012, 30.1234, 31.5]}).to_csv(
        results_tree / "evaluation" / "results" / "demo" / "sr.csv", index=False
    )
    spec = "evaluation/results/demo/sr.csv"
    readme = results_tree / "README.md"
    readme.write_text(
        f"Text.\n<!-- table: {spec} | columns: psnr_mean -->\n| old |\n<!-- end -->\n"
        f"SR1 reaches <!-- value: {spec} | row: SR1 | column: psnr_mean -->31.0<!-- end --> dB.\n"
        f"<!-- table: {spec} | rows: SR1 (Swin), mean; lanczos | columns: psnr_mean -->\n<!-- end -->\n", encoding="utf-8"
    )
    check = run("--check", str(readme), capsys=capsys)
    assert check.returncode == 1 and check.stderr.count("README.md disagrees with its source") == 3
    assert run(str(readme), capsys=capsys).returncode == 0
    text = readme.read_text(encoding="utf-8")
    assert "| lanczos | 26.5 |" in text and "| SR1 | 30.12 |" in text
    assert "SR1 reaches <!-- value:" in text and "-->30.12<!-- end --> dB." in text
    # rows named with commas, listed with ";", in the order given
    assert "| SR1 (Swin), mean | 31.5 |\n| lanczos | 26.5 |" in text
    assert run("--check", str(readme), capsys=capsys).returncode == 0
    readme.write_text(f"<!-- value: {spec} | row: SR9 | column: psnr_mean -->1<!-- end -->\n", encoding="utf-8")
    missing = run("--check", str(readme), capsys=capsys)
    assert missing.returncode == 2 and "README.md cites SR9 of evaluation/results/demo/sr.csv" in missing.stderr


def test_every_document_is_checked_with_paths_from_the_repository(results_tree, capsys):
    pd.DataFrame({"method": ["SR1"], "psnr_mean": [30.0]}).to_csv(results_tree / "evaluation" / "results" / "demo" / "sr.csv",
                                                                   index=False)
    value = "<!-- value: evaluation/results/demo/sr.csv | row: SR1 | column: psnr_mean -->{}<!-- end -->\n"
    (results_tree / "README.md").write_text(value.format(30), encoding="utf-8")
    (results_tree / "docs").mkdir()
    (results_tree / "docs" / "results.md").write_text(value.format(29), encoding="utf-8")
    (results_tree / "docs" / "notes.md").write_text("no numbers here\n", encoding="utf-8")
    check = run("--check", capsys=capsys)
    assert check.returncode == 1
    assert check.stderr.splitlines() == [
        "docs/results.md disagrees with its source: evaluation/results/demo/sr.csv | row: SR1 | column: psnr_mean "
        "(run python scripts/readme_tables.py)"]
    assert run(capsys=capsys).returncode == 0 and "-->30<!-- end -->" in (results_tree / "docs" / "results.md").read_text(encoding="utf-8")
    (results_tree / "docs" / "results.md").write_text(value.replace("sr.csv", "gone.csv").format(1), encoding="utf-8")
    assert run("--check", capsys=capsys).stderr.startswith("error: docs/results.md cites evaluation/results/demo/gone.csv")


def test_a_row_of_a_table_with_key_columns_is_named_by_all_of_them(results_tree, capsys):
    pd.DataFrame({"stage": ["sr1", "sr2"], "a": ["ref, Swin"] * 2, "b": ["project"] * 2, "metric": ["psnr"] * 2,
                  "difference": [1.5, 2.5]}).to_csv(results_tree / "evaluation" / "results" / "demo" / "swin.csv", index=False)
    spec = "evaluation/results/demo/swin.csv"
    readme = results_tree / "README.md"
    readme.write_text(f"<!-- value: {spec} | row: sr2, ref, Swin, project, psnr | column: difference -->?<!-- end -->\n", encoding="utf-8")
    assert run(str(readme), capsys=capsys).returncode == 0
    assert "-->2.5<!-- end -->" in readme.read_text(encoding="utf-8")
    # a table whose key columns name two rows alike is refused, not repeated row for row
    pd.DataFrame({"stage": ["base64", "base64"], "NFE": [1000, 25]}).to_csv(results_tree / "evaluation" / "results" / "demo" / "eq.csv", index=False)
    readme.write_text("<!-- table: evaluation/results/demo/eq.csv -->\n<!-- end -->\n", encoding="utf-8")
    result = run(str(readme), capsys=capsys)
    assert result.returncode != 0 and "whose rows base64 are named more than once by stage" in result.stderr


def test_a_claims_block_writes_each_rows_sentence_from_its_verdict_columns(results_tree, capsys):
    """The words of a claim come from the verdict, as the numbers come from the file: a changed verdict
    rewrites the sentence, and only the rows of the endpoint asked for are claimed."""
    from mrnet_utils.evaluation.claims import claim

    rows = pd.DataFrame({
        "a": ["SR1 (Swin), mean", "SR1 (Swin), sample"], "b": ["lanczos", "lanczos"], "metric": ["psnr", "ssim"],
        "difference": [1.2, -0.01], "ci_low": [0.8, -0.03], "ci_high": [1.6, 0.01], "exams": [6, 6], "slices": [30, 30],
        "verdict": ["SR1 (Swin), mean better than lanczos", "inconclusive: the data cannot exclude -0.03"],
        "endpoint": ["primary", "exploratory"], "family": [24, None], "nfe_a": [16, 4], "nfe_b": [0, 0]})
    path = results_tree / "evaluation" / "results" / "demo" / "c.csv"
    rows.to_csv(path, index=False)
    readme = results_tree / "README.md"
    readme.write_text("<!-- claims: evaluation/results/demo/c.csv | endpoint: primary -->\n<!-- end -->\n", encoding="utf-8")
    assert run(str(readme), capsys=capsys).returncode == 0
    primary = claim(pd.read_csv(path).iloc[0].to_dict())
    assert readme.read_text(encoding="utf-8") == f"<!-- claims: evaluation/results/demo/c.csv | endpoint: primary -->\n- {primary}\n<!-- end -->\n"
    assert "SR1 (Swin), mean (16 NFE) is better than lanczos on PSNR" in primary
    rows.loc[0, "verdict"] = "inconclusive: the data cannot exclude 0.8"
    rows.to_csv(path, index=False)
    assert run("--check", str(readme), capsys=capsys).returncode == 1  # the words follow the verdict
    readme.write_text("<!-- claims: evaluation/results/demo/c.csv | rows: SR1 (Swin), sample, lanczos, ssim -->\n<!-- end -->\n", encoding="utf-8")
    assert run(str(readme), capsys=capsys).returncode == 0
    assert readme.read_text(encoding="utf-8").count("\n- ") == 1 and "inconclusive" in readme.read_text(encoding="utf-8")


def test_the_preset_table_in_docs_is_current(capsys):
    spec = importlib.util.spec_from_file_location("preset_table", ROOT / "scripts" / "preset_table.py")
    preset_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preset_table)
    assert preset_table.main(["--check"]) == 0, capsys.readouterr().err


def test_the_readme_is_read_in_five_minutes():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


def test_the_readme_shows_run_all_sh_help_as_the_script_prints_it():
    shown = subprocess.run(["bash", str(ROOT / "run_all.sh"), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0
    assert f"<!-- help: run_all.sh -->\n```text\n{shown.stdout}```\n<!-- end -->" in README.read_text(encoding="utf-8")


def test_a_usage_block_follows_its_script(results_tree, capsys):
    script = results_tree / "tool.sh"
    script.write_text('[ "$1" = --help ] && echo "Usage: tool [--fast]" && exit 0; exit 2\n', encoding="utf-8")
    readme = results_tree / "README.md"
    readme.write_text("It says:\n<!-- help: tool.sh -->\n<!-- end -->\n", encoding="utf-8")
    assert run(str(readme), capsys=capsys).returncode == 0
    assert readme.read_text(encoding="utf-8") == "It says:\n<!-- help: tool.sh -->\n```text\nUsage: tool [--fast]\n```\n<!-- end -->\n"
    script.write_text('[ "$1" = --help ] && echo "Usage: tool [--fast] [--slow]" && exit 0; exit 2\n', encoding="utf-8")
    assert run("--check", str(readme), capsys=capsys).returncode == 1
    script.write_text('echo "no help here" >&2; exit 2\n', encoding="utf-8")
    failed = run("--check", str(readme), capsys=capsys)
    assert failed.returncode == 2 and "README.md shows the usage of tool.sh, whose --help failed: no help here" in failed.stderr


def test_ci_runs_the_readme_s_test_command():
    commands = re.search(r"```bash\n(.*?)```", section(README.read_text(encoding="utf-8"), "Set-up: two commands"), re.S).group(1)
    study, tests = [line.split("#")[0].strip() for line in commands.splitlines()]
    assert (study, tests) == ("bash run_all.sh", "bash scripts/test.sh")
    ci = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    assert ci[-1] == tests


@pytest.mark.slow
def test_the_readme_s_command_lines_run_as_written_on_the_smoke_preset(tmp_path, monkeypatch):
    """Every line of the README's command-line blocks, from an empty folder, with --preset smoke for demo: each
    expanded by bash as typed, then run through the entry point `python -m mrnet_utils` calls, in this process."""
    from mrnet_utils import cli

    blocks = re.findall(r"```bash\n(.*?)```", section(README.read_text(encoding="utf-8"), "Command line"), re.S)
    lines = [line for block in blocks for line in block.splitlines() if line.strip()]
    assert len(lines) >= 10 and all(line.startswith("python -m mrnet_utils ") for line in lines)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MRNET_ROOT", raising=False)
    for line in lines:
        command = line.split("#")[0].replace("--preset demo", "--preset smoke")
        words = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], capture_output=True, text=True, check=True)
        argv = words.stdout.split("\0")[:-1]
        assert argv[:3] == ["python", "-m", "mrnet_utils"]
        assert cli.main(argv[3:]) == 0, command
    assert len(list((tmp_path / "samples").glob("sample_*.png"))) == 16
    assert len(list((tmp_path / "acl_tears").glob("sample_*.png"))) == 16
    assert any((tmp_path / "scored").iterdir())


@pytest.mark.slow
def test_the_test_command_records_its_wall_time_and_exit_code_when_asked(tmp_path):
    """`bash scripts/test.sh --record-time FILE`: how the README's time for the test suite is recorded."""
    record = tmp_path / "test_times.csv"
    for selected, code in (("tests/test_compare_studies.py", 0), ("tests/test_compare_studies.py::no_such_test", 4)):
        result = subprocess.run(["bash", str(ROOT / "scripts" / "test.sh"), "--record-time", str(record), "-n", "0",
                                 "-q", "-p", "no:cacheprovider", selected], capture_output=True, text=True)
        assert result.returncode == code, result.stdout + result.stderr
        times = pd.read_csv(record)
        assert list(times.columns) == ["command", "seconds", "exit_code"] and len(times) == 1
        assert times.loc[0, "command"] == "bash scripts/test.sh" and times.loc[0, "exit_code"] == code
        assert 0 <= times.loc[0, "seconds"] < 600

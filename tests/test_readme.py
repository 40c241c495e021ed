"""The README's numbers come from the result files: its marked tables and values match them."""

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
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


def test_the_readme_matches_every_result_file_it_cites(capsys):
    result = run("--check", capsys=capsys)
    assert result.returncode == 0, result.stderr


def test_a_number_that_disagrees_with_its_file_is_found_and_rewritten(tmp_path, capsys):
    results = ROOT / "evaluation" / "results" / "_readme_test"
    results.mkdir(parents=True, exist_ok=True)
    try:
        pd.DataFrame({"method": ["lanczos", "SR1", "SR1 (Swin), mean"], "psnr_mean": [26.5012, 30.1234, 31.5]}).to_csv(
            results / "sr.csv", index=False
        )
        spec = "evaluation/results/_readme_test/sr.csv"
        readme = tmp_path / "README.md"
        readme.write_text(
            f"Text.\n<!-- table: {spec} | columns: psnr_mean -->\n| old |\n<!-- end -->\n"
            f"SR1 reaches <!-- value: {spec} | row: SR1 | column: psnr_mean -->31.0<!-- end --> dB.\n"
            f"<!-- table: {spec} | rows: SR1 (Swin), mean; lanczos | columns: psnr_mean -->\n<!-- end -->\n"
        )
        check = run("--check", "--readme", str(readme), capsys=capsys)
        assert check.returncode == 1 and check.stderr.count("disagrees with its source") == 3
        assert run("--readme", str(readme), capsys=capsys).returncode == 0
        text = readme.read_text()
        assert "| lanczos | 26.5 |" in text and "| SR1 | 30.12 |" in text
        assert "SR1 reaches <!-- value:" in text and "-->30.12<!-- end --> dB." in text
        # rows named with commas, listed with ";", in the order given
        assert "| SR1 (Swin), mean | 31.5 |\n| lanczos | 26.5 |" in text
        assert run("--check", "--readme", str(readme), capsys=capsys).returncode == 0
        readme.write_text(f"<!-- value: {spec} | row: SR9 | column: psnr_mean -->1<!-- end -->\n")
        missing = run("--check", "--readme", str(readme), capsys=capsys)
        assert missing.returncode == 2 and "README cites SR9 of evaluation/results/_readme_test/sr.csv" in missing.stderr
    finally:
        for path in results.iterdir():
            path.unlink()
        results.rmdir()


def test_a_row_of_a_table_with_key_columns_is_named_by_all_of_them(tmp_path, capsys):
    results = ROOT / "evaluation" / "results" / "_readme_keys_test"
    results.mkdir(parents=True, exist_ok=True)
    try:
        pd.DataFrame({"stage": ["sr1", "sr2"], "a": ["ref, Swin"] * 2, "b": ["project"] * 2, "metric": ["psnr"] * 2,
                      "difference": [1.5, 2.5]}).to_csv(results / "swin.csv", index=False)
        spec = "evaluation/results/_readme_keys_test/swin.csv"
        readme = tmp_path / "README.md"
        readme.write_text(f"<!-- value: {spec} | row: sr2, ref, Swin, project, psnr | column: difference -->?<!-- end -->\n")
        assert run("--readme", str(readme), capsys=capsys).returncode == 0
        assert "-->2.5<!-- end -->" in readme.read_text()
    finally:
        for path in results.iterdir():
            path.unlink()
        results.rmdir()


def test_the_preset_table_in_docs_is_current(capsys):
    spec = importlib.util.spec_from_file_location("preset_table", ROOT / "scripts" / "preset_table.py")
    preset_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preset_table)
    assert preset_table.main(["--check"]) == 0, capsys.readouterr().err

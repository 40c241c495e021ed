"""Progress output: tqdm's bar where someone watches, plain lines in a batch log, nothing under --quiet."""

import io

import pytest
from tqdm.auto import tqdm

from mrnet_utils import cli, progress


@pytest.fixture
def clock(monkeypatch):
    """A fake clock for the plain lines: `clock.now` seconds since the loop started."""
    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    fake = Clock()
    monkeypatch.setattr(progress, "_clock", fake)
    return fake


def test_off_a_terminal_a_loop_writes_a_plain_line_every_interval_and_one_at_the_end(clock, capsys):
    items = []
    for item in progress.track(range(7), desc="phantom", unit="exam"):
        items.append(item)
        clock.now += 10.0  # LOG_SECONDS is 30: a line after the 3rd and the 6th item, then the last
    err = capsys.readouterr().err
    assert items == list(range(7)) and "\r" not in err
    assert err.splitlines() == ["phantom:  43% 3/7 [00:30<00:40, 10.00s/exam]",
                                "phantom:  86% 6/7 [01:00<00:10, 10.00s/exam]",
                                "phantom: 100% 7/7 [01:10<00:00, 10.00s/exam]"]


def test_a_display_advanced_by_hand_counts_from_where_it_resumed_shows_its_postfix_and_ends_once(clock, capsys):
    bar = progress.track(desc="train base64_swin", total=10, initial=4, unit="step")
    for _ in range(6):
        clock.now += 10.0
        bar.update(1)
        bar.set_postfix(loss=0.0213456, img_s=51.25)
    bar.close()
    bar.close()
    assert capsys.readouterr().err.splitlines() == [
        "train base64_swin:  70% 7/10 [00:30<00:30, 10.00s/step, img_s=51.2, loss=0.0213]",
        "train base64_swin: 100% 10/10 [01:00<00:00, 10.00s/step, img_s=51.2, loss=0.0213]"]
    # A loop that ends right after a line does not repeat it.
    with progress.track(range(3), desc="probe") as again:
        for _ in again:
            clock.now += 30.0
    assert [line.split(" [")[0] for line in capsys.readouterr().err.splitlines()] == [
        "probe:  33% 1/3", "probe:  67% 2/3", "probe: 100% 3/3"]


def test_quiet_and_disabled_loops_show_nothing_and_still_run(capsys):
    with progress.quiet():
        assert list(progress.track(range(3), desc="quiet")) == [0, 1, 2]
        with progress.quiet():
            pass
        assert list(progress.track(range(2), desc="still quiet")) == [0, 1]  # an inner block ends, this one holds
    assert list(progress.track(range(2), desc="off", enabled=False)) == [0, 1]
    assert capsys.readouterr().err == ""
    assert isinstance(progress.track(range(1), desc="shown"), progress.LogLines)  # after the block


def test_on_a_terminal_it_is_tqdms_bar(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Terminal())
    bar = progress.track(range(2), desc="shown")
    assert isinstance(bar, tqdm) and not bar.disable and list(bar) == [0, 1]


def test_training_in_a_log_file_ends_with_one_line_and_no_carriage_return(tiny_cache, tmp_path, capsys):
    argv = ["train", "--stage", "base64", "--preset", "smoke", "--steps", "2", "--data", str(tiny_cache), "--out",
            str(tmp_path / "run"), "--no-grids"]
    assert cli.main(argv) == 0  # stderr is captured: not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("train base64_swin")]
    assert len(lines) == 1 and lines[0].startswith("train base64_swin: 100% 2/2 [") and ", loss=" in lines[0]


def test_quiet_on_the_command_line_silences_the_progress_lines_only(tmp_path, capsys):
    argv = ["synth", "--out", str(tmp_path / "a"), "--train-exams", "1", "--valid-exams", "1"]
    assert cli.main(argv) == 0
    shown = capsys.readouterr()
    assert [line.split(" [")[0] for line in shown.err.splitlines()] == ["phantom a: 100% 2/2"]
    argv[2] = str(tmp_path / "b")
    assert cli.main([*argv, "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out == shown.out.replace(str(tmp_path / "a"), str(tmp_path / "b"))

"""scripts/slurm/study.sbatch: it parses, asks SLURM for what preemption and time limits need, runs the
study through run_all.sh (whose resume the library tests), requeues itself on the pre-kill signal and
writes its log next to the run."""

import inspect
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from mrnet_utils.study import training

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm" / "study.sbatch"


def sbatch_options() -> dict[str, str]:
    lines = SCRIPT.read_text(encoding="utf-8").splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if line and not line.startswith("#"))]
    return dict(re.fullmatch(r"#SBATCH --([\w-]+)(?:=(\S+))?(?:\s+#.*)?", line).groups(default="")
                for line in header if line.startswith("#SBATCH"))


def test_the_script_parses_and_asks_for_a_gpu_the_pre_kill_signal_and_requeueing():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    options = sbatch_options()  # only #SBATCH lines before the first command count for sbatch
    assert options["gpus-per-node"] == "1" and options["nodes"] == "1"
    assert "requeue" in options and options["open-mode"] == "append"
    signal_name, seconds = re.fullmatch(r"B:(\w+)@(\d+)", options["signal"]).groups()
    assert signal_name == "USR1" and int(seconds) >= 60  # to the batch shell, in time to requeue
    assert re.search(rf"^trap requeue {signal_name}$", SCRIPT.read_text(encoding="utf-8"), re.M)


def test_its_resume_is_run_all_sh_whose_training_resumes_from_the_newest_checkpoint():
    text = SCRIPT.read_text(encoding="utf-8")
    assert 'bash "$repo/run_all.sh" "$@"' in text
    # run_all.sh trains through the training notebook (train_stage) or, with --gpus, the CLI with --resume
    run_all = (ROOT / "run_all.sh").read_text(encoding="utf-8")
    assert "notebooks/01_train_stage.ipynb" in run_all and '-m mrnet_utils "${options[@]}"' in run_all
    assert re.search(r"options=\(train .*--resume\)", run_all) and re.search(r"options=\(distill .*--resume\)", run_all)
    notebook = (ROOT / "notebooks" / "01_train_stage.ipynb").read_text(encoding="utf-8")
    assert "training.train_stage(" in notebook
    assert "resume=True" in inspect.getsource(training.train_stage)  # tests/test_reliability.py resumes it


def fake_cluster(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A repository whose run_all.sh records its arguments and waits, and an `scontrol` that records its call."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "run_all.sh").write_text('echo "run_all.sh $*"; echo started > "$MARK"; sleep 60\n', encoding="utf-8")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text('#!/bin/bash\necho "$*" > "$SCONTROL_CALLED"\n', encoding="utf-8")
    scontrol.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MRNET_REPO": str(repo), "SLURM_JOB_ID": "4242",
           "SLURM_RESTART_COUNT": "1", "MARK": str(tmp_path / "started"), "SCONTROL_CALLED": str(tmp_path / "scontrol")}
    return repo, tmp_path / "out", env


def wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def test_the_pre_kill_signal_requeues_the_job_and_the_log_lands_next_to_the_run(tmp_path):
    repo, out, env = fake_cluster(tmp_path)
    job = subprocess.Popen(["bash", str(SCRIPT), "--mrnet-root", "/data/MRNet-v1.0", "--out", str(out)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    try:
        wait_for(tmp_path / "started")
        job.send_signal(signal.SIGUSR1)  # what SLURM sends two minutes before the time limit
        wait_for(tmp_path / "scontrol")
        assert (tmp_path / "scontrol").read_text(encoding="utf-8").split() == ["requeue", "4242"]
        assert job.poll() is None  # the study goes on until SLURM ends the job
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    log = (out / "runs" / "gpu" / "slurm-4242.log").read_text(encoding="utf-8")  # the default preset: gpu
    assert "job 4242, start 2, on" in log
    assert f"run_all.sh --preset gpu --mrnet-root /data/MRNet-v1.0 --out {out}" in log
    assert "time limit in 2 minutes: requeueing job 4242" in log
    assert f"log: {out}/runs/gpu/slurm-4242.log" in job.stdout.read()  # SLURM's own file says where


def test_a_finished_study_ends_the_job_with_its_status_and_a_preset_given_wins(tmp_path):
    repo, out, env = fake_cluster(tmp_path)
    (repo / "run_all.sh").write_text('echo "run_all.sh $*"; exit 3\n', encoding="utf-8")
    result = subprocess.run(["bash", str(SCRIPT), "--preset", "demo", "--out", "study"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    log = (repo / "study" / "runs" / "demo" / "slurm-4242.log").read_text(encoding="utf-8")  # --out relative to the repository
    assert "run_all.sh --preset gpu --preset demo --out study" in log and "run_all.sh exited with status 3" in log


def test_a_missing_repository_is_one_line(tmp_path):
    env = {**os.environ, "MRNET_REPO": str(tmp_path)}
    result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path} holds no run_all.sh; submit from the repository or set MRNET_REPO to it"

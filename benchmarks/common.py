"""What every benchmark shares: the machine it ran on, peak memory, counted network calls, RESULTS.md sections."""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shlex
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch
from torch import Tensor, nn

from mrnet_utils.diffusion.processes import sampler_names
from mrnet_utils.diffusion.samplers import SAMPLERS
from mrnet_utils.errors import MRNetError
from mrnet_utils.evaluation.tables import markdown
from mrnet_utils.stages import STAGES

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine_info(device: torch.device) -> dict[str, str]:
    """CPU model, cores, load, torch version and the device: enough to judge a timing."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text(encoding="utf-8")).group(1).strip()
    except (OSError, AttributeError):
        pass
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        # Other work on the machine inflates CPU timings; the 1-minute load says how much there was.
        "load average at start": f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device_name(device),
    }
    return info


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return "CPU"


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces this run, as typed from the repository root (argv None: this process's)."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def parse_sampler(text: str, timesteps: int | None = None) -> tuple[str, int]:
    """'dpmpp:15' -> ('dpmpp', 15); 'ddpm:T' -> ('ddpm', timesteps), where the schedule's T is given."""
    name, _, steps = text.partition(":")
    if steps == "T" and timesteps:
        steps = str(timesteps)
    names = sampler_names()
    if name not in names or not steps.isdigit() or int(steps) < 1:
        raise MRNetError(f"sampler {text!r} is not SAMPLER:STEPS with SAMPLER one of {', '.join(names)} (e.g. dpmpp:15)")
    return name, int(steps)


def stage_sampler(text: str) -> tuple[str, tuple[str, int]]:
    """'base64=ddpm:250' -> ('base64', ('ddpm', 250)); an argparse type."""
    stage, _, sampler = text.partition("=")
    if stage not in STAGES:
        raise argparse.ArgumentTypeError(f"{text!r} is not STAGE=SAMPLER:STEPS with STAGE one of {', '.join(STAGES)}")
    try:
        return stage, parse_sampler(sampler)
    except MRNetError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@contextmanager
def strict_fp32():
    """fp32 that is fp32: CUDA would otherwise run fp32 convolutions (and maybe matmuls) in TF32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class PeakMemory:
    """Peak memory while a `with peak_memory(device) as memory:` block ran, in MiB (`memory.mib`).

    CUDA: torch's peak allocation. CPU: the peak resident set size of the whole process
    (which includes the ~0.5 GiB of imported libraries), reset on entry through
    /proc/self/clear_refs where Linux allows it; elsewhere the process's lifetime peak.
    """

    kind: str = ""
    mib: float = float("nan")


@contextmanager
def peak_memory(device: torch.device) -> Iterator[PeakMemory]:
    memory = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield memory
        torch.cuda.synchronize(device)
        memory.kind, memory.mib = "CUDA allocated", torch.cuda.max_memory_allocated(device) / 2**20
        return
    resettable = _reset_peak_rss()
    yield memory
    if resettable:
        memory.kind, memory.mib = "process RSS", _status_kib("VmHWM") / 1024
    else:
        memory.kind = "process RSS, lifetime peak"
        memory.mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset the peak RSS; True only if the peak now reads as the current RSS (some sandboxed
    kernels accept the write to clear_refs and keep the old peak)."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")  # "5" resets the peak RSS (Linux >= 4.0)
        return 0 < _status_kib("VmHWM") <= _status_kib("VmRSS") + 1024
    except (OSError, ValueError):
        return False


def _status_kib(field: str) -> int:
    match = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(encoding="utf-8"))
    if match is None:
        raise ValueError(f"no {field} in /proc/self/status")
    return int(match.group(1))


class CountingModel(nn.Module):
    """Wraps a network and counts its calls, the images they evaluated (network evaluations) and the wall-clock
    seconds spent in them (GPU work included)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0
        self.images = 0
        self.seconds = 0.0

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        self.calls += 1
        self.images += len(x)
        with timer(x.device) as elapsed:
            output = self.model(x, *args, **kwargs)
        self.seconds += elapsed[0]
        return output


@contextmanager
def timer(device: torch.device) -> Iterator[list[float]]:
    """`with timer(device) as elapsed:` ... `elapsed[0]` holds the wall-clock seconds, GPU work included."""
    elapsed = [float("nan")]
    synchronize(device)
    start = time.perf_counter()
    yield elapsed
    synchronize(device)
    elapsed[0] = time.perf_counter() - start


def markdown_table(rows: list[dict[str, object]]) -> str:
    """Rows of equal keys as a Markdown table (evaluation.tables.markdown)."""
    return markdown(pd.DataFrame(rows), index=False)


def load_line() -> str:
    """The load at the end of a run: with the load at its start, how busy the machine was meanwhile."""
    load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"
    return f"Load average (1 minute) at the end of the run: {load}."


def machine_lines(info: dict[str, str], command: str) -> str:
    facts = "; ".join(f"{key}: {value}" for key, value in info.items())
    return f"Machine: {facts}.\n\nCommand (from the repository root): `{command}`"

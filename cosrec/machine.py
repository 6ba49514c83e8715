"""What a measurement ran on: every benchmark and comparison writes it beside its figures."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model (Linux names it only in /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    """The vector extensions that decide CPU speed here: AVX2, AVX-512, AMX, native bf16."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])  # fmt: skip
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
    return [flag for flag in wanted if flag in flags]


def describe_cpu() -> str:
    features = ", ".join(cpu_features()) or "no AVX2"
    return f"{cpu_name()} ({features}), {os.cpu_count()} cores"


def describe_device(device: str) -> str:
    """The device a torch run used, with torch's version and threads."""
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    return f"{describe_cpu()}, {torch.get_num_threads()} torch threads (torch {torch.__version__})"

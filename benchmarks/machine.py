"""What machine a timing was taken on: CPU model, torch threads, a measured fp32 GEMM rate, and
whether the CPU has bf16 matrix units. Every timing benchmark prints `describe()` first, because
CPUs differ by 3x and a margin measured on one may not hold on another.

    python benchmarks/machine.py
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_bf16_matrix_units() -> bool:
    """AMX on this CPU, and not turned off for oneDNN (`ONEDNN_MAX_CPU_ISA` below AMX). Without it
    bf16 matrix products are emulated and slower than float32: benchmarks skip their bf16 parts."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return "amx_bf16" in flags and (limit == "ALL" or "AMX" in limit)


def gemm_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Measured fp32 matrix-product rate (n x n by n x n) with torch's current threads, in GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def load() -> str:
    """The 1-minute load average against the CPU count: a shared CPU skews every ratio printed."""
    try:
        return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    except OSError:
        return "load unknown"


def describe() -> str:
    return (f"machine: {cpu_model()}, {torch.get_num_threads()} torch threads, fp32 GEMM "
            f"{gemm_gflops():.0f} GFLOP/s, bf16 matrix units (AMX): {has_bf16_matrix_units()}, torch "
            f"{torch.__version__}, {load()}")


if __name__ == "__main__":
    print(describe())

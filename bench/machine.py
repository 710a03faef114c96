"""What the benchmarks print about the machine beside every speed figure: the date and the CPU's flags.

The CPU under this project's VM changes between sessions (AVX2 only on some days, AVX-512 with or without
native bf16 on others), and bf16 speed depends on `avx512_bf16` / `amx_bf16`, so a figure without them cannot
be compared with another.
"""

from __future__ import annotations

import datetime
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """"avx2 avx512f, no avx512_bf16, no amx_bf16": each of FLAGS, present or named as absent."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return "CPU flags unknown (no /proc/cpuinfo)"
    present: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            present.update(line.split(":", 1)[1].split())
    have = [flag for flag in FLAGS if flag in present]
    lacking = [f"no {flag}" for flag in FLAGS if flag not in present]
    return ", ".join(filter(None, (" ".join(have), ", ".join(lacking))))


def stamp() -> str:
    """"2026-12-01T21:40Z, CPU flags: ...": the line every benchmark prints first."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
    return f"{now}, CPU flags: {cpu_flags()}"

"""clinix's cache folder (``$CLINIX_CACHE_DIR``, else ``~/.cache/clinix``): what a machine computes once
and keeps, keyed by what it depends on. It holds compiled scan kernels (``kernels/``) and the measured
training speed of the CPU (``cpu-speed.json``); deleting it only costs recomputing them.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cache_dir() -> Path:
    configured = os.environ.get("CLINIX_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "clinix"


def machine_identity() -> str:
    """OS, architecture and, where /proc/cpuinfo exists, the CPU model and feature flags."""
    identity = f"{platform.system()} {platform.machine()}"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        wanted = ("model name", "flags", "Features", "CPU part")
        lines = [line for line in cpuinfo.read_text().splitlines() if line.startswith(wanted)]
        identity += "\n" + "\n".join(sorted(set(lines)))
    return identity

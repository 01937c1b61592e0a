"""clinix's cache folder (``$CLINIX_CACHE_DIR``, else ``~/.cache/clinix``): what a machine computes once
and keeps, keyed by what it depends on. It holds compiled scan kernels (``kernels/``), the measured
training speed of the CPU (``cpu-speed.json``) and its bf16 training self-check (``bf16-training.json``);
deleting it only costs recomputing them. The JSON files are stores of ``machine_key(...)`` -> value,
read with ``read_store`` and written with ``write_store``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any


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


def machine_key(*details: str) -> str:
    """A short key for this machine (``machine_identity``), its torch version and ``details``."""
    import torch

    identity = "\n".join([machine_identity(), f"torch {torch.__version__}", *details])
    return hashlib.sha256(identity.encode()).hexdigest()[:20]


def read_store(name: str) -> dict[str, Any]:
    """The JSON store ``name`` of the cache folder; empty when it is missing, unreadable or not an object."""
    try:
        content = json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def write_store(name: str, content: dict[str, Any]) -> None:
    """Write the JSON store ``name`` atomically (an OSError, e.g. a read-only home, is the caller's)."""
    from clinix.io.atomic import atomic_write

    atomic_write(cache_dir() / name, lambda tmp: tmp.write_text(json.dumps(content, indent=2) + "\n"))

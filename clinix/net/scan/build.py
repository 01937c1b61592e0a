"""Compile ``clinix/net/csrc/selective_scan.cpp`` at first use, cache it, load it with ctypes.

The kernel is plain C++ (no torch headers), so any system compiler builds it in about a second and
``torch.utils.cpp_extension`` (which needs ninja) is not involved. The compiler is ``$CXX`` when set,
else the first of ``c++``, ``g++``, ``clang++`` on PATH. The shared library is cached in ``kernels/``
of clinix's cache (``clinix.cache``) under a name keyed by a hash of the source, the flags, the
compiler's identity and the machine's CPU (``-march=native`` code must not be shared between CPUs).
It is built to a temporary name and renamed, so concurrent first uses never load a half-written file.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from clinix.cache import cache_dir, machine_identity
from clinix.io.atomic import atomic_path

SOURCE = Path(__file__).resolve().parents[1] / "csrc" / "selective_scan.cpp"
# Tried in order: the fast build, then one without the CPU-specific and OpenMP flags that some
# compilers (Apple clang) reject. -fno-trapping-math lets the compiler turn the clamps of the exp into
# vector min/max (without it the state loop stays scalar, several times slower); it changes no result.
PORTABLE_FLAGS = ("-O3", "-fno-trapping-math", "-fno-math-errno", "-std=c++17", "-shared", "-fPIC")
FLAG_SETS = (("-march=native", "-fopenmp", *PORTABLE_FLAGS), PORTABLE_FLAGS)
COMPILE_TIMEOUT_S = 120


class KernelUnavailable(RuntimeError):
    """The C++ kernel cannot be built or loaded here; the message says why."""


@dataclass(frozen=True)
class KernelLibrary:
    """A loaded kernel: the ctypes handle, the file it came from, and whether this call compiled it."""

    handle: ctypes.CDLL
    path: Path
    compiled: bool


def kernel_cache_dir() -> Path:
    """Where compiled kernels live: ``kernels/`` in clinix's cache (``$CLINIX_CACHE_DIR`` or ``~/.cache/clinix``)."""
    return cache_dir() / "kernels"


def find_compiler() -> list[str]:
    """The compiler command (``$CXX`` split like a shell would), or raise ``KernelUnavailable``."""
    configured = shlex.split(os.environ.get("CXX", ""))
    if configured:
        if shutil.which(configured[0]) is None:
            raise KernelUnavailable(f"the compiler in $CXX ({configured[0]}) was not found")
        return configured
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name) is not None:
            return [name]
    raise KernelUnavailable("no C++ compiler found ($CXX, c++, g++ or clang++)")


def load_kernel() -> KernelLibrary:
    """Load the cached kernel for this source, compiler and machine, compiling it first if needed."""
    compiler = find_compiler()
    try:
        source = SOURCE.read_bytes()
    except OSError as error:
        raise KernelUnavailable(f"cannot read the kernel source: {error}") from error
    identity = _compiler_identity(compiler) + machine_identity()
    failures = []
    for flags in FLAG_SETS:
        path = kernel_cache_dir() / f"selective_scan-{_build_key(source, flags, identity)}.so"
        compiled = not path.exists()
        try:
            if compiled:
                _compile(compiler, flags, path)
            return KernelLibrary(_open(path), path, compiled)
        # AttributeError: the library lacks one of the functions _open declares.
        except (OSError, AttributeError, subprocess.SubprocessError, KernelUnavailable) as error:
            failures.append(f"{' '.join(flags)}: {error}")
    raise KernelUnavailable("building the C++ scan kernel failed: " + " | ".join(failures))


def _build_key(source: bytes, flags: tuple[str, ...], identity: str) -> str:
    digest = hashlib.sha256(source)
    digest.update("\0".join((*flags, identity)).encode())
    return digest.hexdigest()[:20]


def _compiler_identity(compiler: list[str]) -> str:
    """The compiler's resolved path and ``--version`` text: a compiler upgrade means a rebuild."""
    try:
        version = subprocess.run(
            [*compiler, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise KernelUnavailable(f"{compiler[0]} --version failed: {error}") from error
    return f"{shutil.which(compiler[0])}\n{version}"


def _compile(compiler: list[str], flags: tuple[str, ...], path: Path) -> None:
    with atomic_path(path, suffix=".so") as tmp:
        result = subprocess.run(
            [*compiler, *flags, str(SOURCE), "-o", str(tmp)],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_S,
        )
        if result.returncode != 0:
            raise KernelUnavailable(result.stderr.strip()[-500:] or f"exit status {result.returncode}")


def _open(path: Path) -> ctypes.CDLL:
    """Load the library and declare the C signatures of its two functions."""
    handle = ctypes.CDLL(str(path))
    pointer, flag, size = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
    handle.clinix_scan_forward.argtypes = [pointer] * 10 + [flag] + [size] * 5 + [ctypes.c_int]
    handle.clinix_scan_forward.restype = None
    handle.clinix_scan_backward.argtypes = [pointer] * 18 + [flag] + [size] * 5 + [ctypes.c_int]
    handle.clinix_scan_backward.restype = None
    return handle

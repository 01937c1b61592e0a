"""Model bundles: ``clinix export WORK model.zip`` and ``clinix predict --model model.zip IN OUT``.

A bundle is a zip holding a small working folder, so prediction from it is prediction from a folder::

    bundle.json                                   format, clinix version, folds, labels, channels, checksums
    plans.json
    results/3d_fullres/fold_F/checkpoint_final.pt the weights and the plan only (no optimizer, no history)
    results/3d_fullres/postprocessing.json        when clinix crossval decided one

Opening one refuses, each with one line: a file that is not a zip, a bundle without ``bundle.json`` or of
a newer format than this clinix reads, a member whose path is absolute, climbs out with ``..``, or is a
link, a member not listed in ``bundle.json``, and a member whose SHA-256 differs from the listed one.
Members are extracted into a fresh temporary folder only, removed afterwards; checkpoints load with
``weights_only`` (clinix.checkpoint), so nothing in a bundle can run code.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from clinix import __version__
from clinix.checkpoint import load_checkpoint, save_checkpoint
from clinix.errors import ClinixError
from clinix.infer.folds import FoldName, select_fold_checkpoints
from clinix.io.atomic import atomic_path, write_json
from clinix.workdir import WorkDir

FORMAT = 1
MANIFEST = "bundle.json"
INFERENCE_KEYS = ("model", "plan", "fold", "epoch", "best_ema", "seed", "clinix_version", "mirror_axes")
CHUNK = 1 << 20


def export_bundle(
    workdir: str | Path, out: str | Path, folds: str | Sequence[FoldName] | None = None, checkpoint: str = "final"
) -> Path:
    """Write the bundle of ``workdir``'s trained ``folds`` (as ``clinix predict`` chooses them) to ``out``."""
    work, out = WorkDir(workdir), Path(out)
    if out.suffix.lower() != ".zip":
        raise ClinixError(f"{out}: a model bundle is a .zip file")
    selected = select_fold_checkpoints(work.root, folds, checkpoint)
    with tempfile.TemporaryDirectory(prefix="clinix-export-") as scratch:
        staging = WorkDir(scratch)
        plan = None
        for fold, path in selected:
            state = load_checkpoint(path)
            plan = plan or state["plan"]
            slim = {key: state[key] for key in INFERENCE_KEYS if key in state}
            save_checkpoint(staging.checkpoint(fold, "final"), slim)
        write_json(staging.plans, plan)
        if work.postprocessing().is_file():
            shutil.copy(work.postprocessing(), staging.postprocessing())
        files = sorted(p for p in staging.root.rglob("*") if p.is_file())
        names = {p.relative_to(staging.root).as_posix(): _sha256(p) for p in files}
        manifest = {
            "format": FORMAT,
            "clinix_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "folds": [fold for fold, _ in selected],
            "checkpoint": checkpoint,
            "dataset": {key: plan["dataset"].get(key) for key in ("name", "labels", "channel_names", "ignore_label")},
            "files": names,
        }
        with atomic_path(out, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2))
            for name in names:
                archive.write(staging.root / name, name)
    return out


@contextmanager
def open_bundle(path: str | Path) -> Iterator[Path]:
    """Check and extract the bundle ``path`` into a temporary folder; yields that folder (a WORK)."""
    path = Path(path)
    manifest, archive = _open(path)
    scratch = Path(tempfile.mkdtemp(prefix="clinix-bundle-"))
    try:
        with archive:
            for name, digest in manifest["files"].items():
                target = scratch.joinpath(*PurePosixPath(name).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(name) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink, CHUNK)
                if _sha256(target) != digest:
                    raise ClinixError(f"{path}: {name} fails its checksum: the bundle is damaged or was altered")
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """``bundle.json`` of the bundle ``path``, after the checks of the module docstring (no extraction)."""
    manifest, archive = _open(Path(path))
    archive.close()
    return manifest


def _open(path: Path) -> tuple[dict[str, Any], zipfile.ZipFile]:
    if not path.is_file():
        raise ClinixError(f"{path}: model bundle not found")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ClinixError(f"{path}: not a zip archive, so not a clinix model bundle ({error})") from None
    try:
        manifest = _manifest(path, archive)
        _check_members(path, archive, manifest)
    except BaseException:
        archive.close()
        raise
    return manifest, archive


def _manifest(path: Path, archive: zipfile.ZipFile) -> dict[str, Any]:
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except KeyError:
        raise ClinixError(f"{path}: not a clinix model bundle (no {MANIFEST})") from None
    except (ValueError, zipfile.BadZipFile, OSError) as error:
        raise ClinixError(f"{path}: {MANIFEST} cannot be read ({error})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ClinixError(f"{path}: {MANIFEST} is not a clinix bundle manifest")
    version = manifest.get("format")
    if not isinstance(version, int) or version < 1:
        raise ClinixError(f"{path}: {MANIFEST} has no valid format number ({version!r})")
    if version > FORMAT:
        raise ClinixError(
            f"{path}: bundle format {version} is newer than this clinix {__version__} reads ({FORMAT}); "
            "upgrade clinix to use it"
        )
    return manifest


def _check_members(path: Path, archive: zipfile.ZipFile, manifest: dict[str, Any]) -> None:
    listed = set(manifest["files"])
    for info in archive.infolist():
        name = info.filename
        if not _safe_name(name) or stat.S_ISLNK(info.external_attr >> 16):
            raise ClinixError(f"{path}: member {name!r} would leave the bundle's folder (or is a link): refused")
        if name != MANIFEST and not info.is_dir() and name not in listed:
            raise ClinixError(f"{path}: member {name!r} is not listed in {MANIFEST}: refused")
    present = {info.filename for info in archive.infolist()}
    for name in sorted(listed):
        if not _safe_name(name):
            raise ClinixError(f"{path}: {MANIFEST} lists {name!r}, a path outside the bundle's folder: refused")
        if name not in present:
            raise ClinixError(f"{path}: {MANIFEST} lists {name}, which the zip does not hold")


def _safe_name(name: str) -> bool:
    """A relative POSIX path that stays inside the folder it is extracted to."""
    if not name or "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return False
    return all(part not in ("..", "") for part in PurePosixPath(name).parts) and "\x00" not in name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def predict_with_bundle(bundle: str | Path, in_dir: str | Path, out_dir: str | Path, **options: Any) -> Any:
    """``clinix predict --model bundle.zip``: ``predict_folder`` (its ``options``) on the extracted bundle."""
    from clinix.infer import predict_folder

    with open_bundle(bundle) as work:
        return predict_folder(work, in_dir, out_dir, **options)

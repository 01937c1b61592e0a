"""``inference.json``: the models ``clinix best`` chose, for ``clinix predict --model inference.json IN OUT``.

One or more members (a trained working folder and its folds) whose probabilities are averaged on each
input's grid, and the postprocessing decided on their cross-validation predictions. The folders are
named by absolute path: the file belongs to the machine that trained them (``clinix export`` moves one
model to another machine).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clinix import __version__
from clinix.errors import ClinixError
from clinix.infer.folds import FoldName
from clinix.infer.parts import Part
from clinix.infer.run import PredictionSummary, input_cases, load_predictor, predict_part
from clinix.postprocess import Postprocessing

FORMAT = 1


@dataclass(frozen=True)
class Member:
    """A trained working folder and the folds of it that predict."""

    workdir: Path
    folds: tuple[FoldName, ...]
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"workdir": str(self.workdir), "folds": list(self.folds), "name": self.name}


@dataclass(frozen=True)
class InferenceConfig:
    """The content of inference.json; ``candidates`` is the comparison it was chosen from."""

    members: tuple[Member, ...]
    postprocessing: Postprocessing
    chosen: str
    candidates: list[dict[str, Any]] = field(default_factory=list, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "clinix_version": __version__,
            "chosen": self.chosen,
            "members": [member.to_json() for member in self.members],
            "postprocessing": self.postprocessing.to_json(),
            "candidates": self.candidates,
        }


def read_inference(path: str | Path) -> InferenceConfig:
    """Parse and check ``path``; a ClinixError naming it for a bad file or a member folder that is gone."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClinixError(f"{path}: not found (write it with 'clinix best WORK [WORK...]')") from None
    except (OSError, ValueError) as error:
        raise ClinixError(f"{path}: cannot be read as JSON ({error})") from None
    try:
        if data["format"] > FORMAT:
            raise ClinixError(f"{path}: inference format {data['format']} is newer than this clinix reads ({FORMAT})")
        members = tuple(Member(Path(m["workdir"]), tuple(m["folds"]), str(m.get("name", ""))) for m in data["members"])
        postprocessing = Postprocessing.from_json(data["postprocessing"], path)
        config = InferenceConfig(members, postprocessing, str(data["chosen"]), list(data.get("candidates", [])))
    except ClinixError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise ClinixError(f"{path}: not a clinix inference.json ({type(error).__name__}: {error})") from None
    if not members:
        raise ClinixError(f"{path}: names no model")
    for member in members:
        if not member.workdir.is_dir():
            raise ClinixError(
                f"{path}: the working folder {member.workdir} is not on this machine "
                "(move a model with 'clinix export WORK model.zip')"
            )
    return config


def predict_with_inference(
    path: str | Path,
    in_dir: str | Path,
    out_dir: str | Path,
    folds: Any = None,
    checkpoint: str = "final",
    tta: bool = True,
    step: float = 0.5,
    save_probabilities: bool = False,
    device: str = "auto",
    overwrite: bool = False,
    batch_tiles: int | None = None,
    precision: str = "auto",
    postprocess: bool = True,
    part: Part | None = None,
) -> PredictionSummary:
    """``clinix predict --model inference.json``: its members' folds, averaged, then its postprocessing.

    ``folds`` must be None: inference.json names the folds of each member.
    """
    config = read_inference(path)
    if folds is not None:
        raise ClinixError(f"--folds cannot be combined with --model {path}: it names the folds of each model")
    cases = input_cases(in_dir, out_dir, part)
    predictors = [
        load_predictor(member.workdir, list(member.folds), checkpoint, device, tta, step, batch_tiles, precision)
        for member in config.members
    ]
    labels = {repr(p.plan.labels.to_json()) for p in predictors}
    if len(labels) > 1:
        raise ClinixError(f"{path}: its models predict different labels, so they cannot be averaged")
    rules = None if not postprocess or config.postprocessing.is_identity else config.postprocessing
    used = [fold for member in config.members for fold in member.folds]
    return predict_part(predictors, cases, Path(out_dir), part, save_probabilities, overwrite, rules, used)

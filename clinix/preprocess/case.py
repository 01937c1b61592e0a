"""Preprocess one case: crop, normalise, resample, sample class locations (nnU-Net reference §4.1).

Training and inference run the same steps; without a label only the label steps are skipped.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from clinix.errors import ClinixError
from clinix.fingerprint import ct_channels
from clinix.io.image import Geometry
from clinix.plan.model import Plan
from clinix.preprocess.crop import crop_box, crop_to_nonzero
from clinix.preprocess.normalize import normalize_image
from clinix.preprocess.resample import compute_new_shape, resample_image, resample_labels

MAX_LOCATIONS = 10_000  # per class, as nnU-Net (reference §4.5)
MIN_LOCATIONS_PERCENT = 1  # ... but never fewer than 1 % of the class
LOCATION_SEED = 1234


@dataclass
class CaseProperties:
    """What is known of a case between the raw image and its preprocessed arrays.

    Shapes and spacings in array order ``(z, y, x)``; ``origin`` and ``direction`` as ``Geometry`` holds
    them. ``crop_box`` is half-open ``[[z0, z1], [y0, y1], [x0, x1]]`` on the original grid.
    ``class_locations`` maps a foreground class (its label value, ``"1"``; for a region dataset the union
    of its regions' values, ``"1,2,3"``: ``LabelSet.location_keys``) to sampled voxels ``[z, y, x]`` of the
    preprocessed grid.
    ``plan_digest`` identifies the preprocessing settings of the plan that produced the arrays, and
    ``source_digest`` the raw files they came from (``Dataset.case_digest``; empty at inference).
    """

    case_id: str
    original_shape: list[int]
    original_spacing: list[float]
    origin: list[float]
    direction: list[float]
    crop_box: list[list[int]]
    shape_after_crop: list[int]
    shape_after_resampling: list[int]
    target_spacing: list[float]
    class_locations: dict[str, list[list[int]]] = field(default_factory=dict)
    plan_digest: str = ""
    source_digest: str = ""

    @property
    def geometry(self) -> Geometry:
        """The original image's spacing, origin and direction, for writing a result onto its grid."""
        return Geometry.from_json(
            {"spacing": self.original_spacing, "origin": self.origin, "direction": self.direction}
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaseProperties:
        return cls(**{k: v for k, v in data.items() if k != "clinix_version"})


def preprocess_case(
    image: np.ndarray, label: np.ndarray | None, geometry: Geometry, plan: Plan, case_id: str = ""
) -> tuple[np.ndarray, np.ndarray | None, CaseProperties]:
    """Crop (to nonzero, or to the body for ``plan.crop == "body"``), normalise per channel, resample.

    Args:
        image: ``(C, Z, Y, X)``.
        label: ``(Z, Y, X)`` integers, or None (inference).
        geometry: the image's spacing ``(z, y, x)``, origin and direction.

    Returns:
        data ``(C, z, y, x)`` float32; seg ``(1, z, y, x)`` int16 with −1 outside the body (None without a
        label); the case's properties.
    """
    if label is not None and label.shape != image.shape[1:]:
        raise ClinixError(f"{case_id}: label shape {label.shape} differs from image shape {image.shape[1:]}")
    box = crop_box(image, label, plan.crop, ct_channels(plan.channel_names), geometry.spacing)
    cropped, body, seg, box = crop_to_nonzero(image, label, box)
    # Normalise before resampling so the body mask still matches the voxels (reference §4.1).
    normalized = normalize_image(cropped, body, plan.normalization)
    source, target = geometry.spacing, plan.target_spacing
    new_shape = compute_new_shape(cropped.shape[1:], source, target)
    data = resample_image(normalized, new_shape, source, target, plan.resampling)
    locations: dict[str, list[list[int]]] = {}
    if seg is not None:
        seg = resample_labels(seg, new_shape, source, target, plan.resampling, plan.resampling.label_order)[None]
        locations = sample_class_locations(seg[0], plan.labels.location_keys())
    properties = CaseProperties(
        case_id=case_id,
        original_shape=list(image.shape[1:]),
        original_spacing=[float(s) for s in geometry.spacing],
        origin=[float(v) for v in geometry.origin],
        direction=[float(v) for v in geometry.direction],
        crop_box=box,
        shape_after_crop=list(cropped.shape[1:]),
        shape_after_resampling=list(new_shape),
        target_spacing=[float(s) for s in target],
        class_locations=locations,
        plan_digest=plan_digest(plan),
    )
    return data, seg, properties


def sample_class_locations(
    seg: np.ndarray, classes: dict[str, list[int]], seed: int = LOCATION_SEED
) -> dict[str, list[list[int]]]:
    """Sample voxels ``[z, y, x]`` of each class of a ``(Z, Y, X)`` label map, for foreground oversampling.

    Per class ``max(min(10 000, n), ceil(1 % · n))`` of its ``n`` voxels, uniformly without replacement,
    listed in raster order; ``[]`` for an absent class. One generator seeded with ``seed`` serves all
    classes in turn, so the result depends only on the label map.
    """
    rng = np.random.default_rng(seed)
    locations = {}
    for key, values in classes.items():
        voxels = np.flatnonzero(np.isin(seg, values))
        count = max(min(MAX_LOCATIONS, voxels.size), math.ceil(voxels.size * MIN_LOCATIONS_PERCENT / 100))
        chosen = np.sort(rng.choice(voxels, count, replace=False)) if count else voxels
        locations[key] = np.stack(np.unravel_index(chosen, seg.shape), axis=1).tolist()
    return locations


def plan_digest(plan: Plan) -> str:
    """A short hash of the plan settings preprocessing depends on; a change means the arrays are stale."""
    settings = {
        "dataset_root": plan.dataset_root,
        "labels": plan.dataset["labels"],
        "target_spacing": plan.target_spacing,
        "normalization": [asdict(n) for n in plan.normalization],
        "resampling": asdict(plan.resampling),
    }
    if plan.crop != "nonzero":  # so the digest of a plan from before the field stays what it was
        settings["crop"] = plan.crop
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

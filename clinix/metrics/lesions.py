"""Lesion detection of one binary mask against its reference: lesions found and false positives.

A lesion is a connected component, with full connectivity: in 3D two voxels that share a face, an edge or
only a corner belong to the same lesion (26-connectivity, the 3×3×3 structure of ones). A reference lesion
is *found* when at least one of its voxels is predicted, i.e. a predicted component overlaps it; one
predicted component over two reference lesions finds both. A predicted component that overlaps no reference
lesion is a *false positive*. The caller removes ignored voxels from both masks first, so a lesion that lies
only under the ignore label is no lesion. Lesion recall is found / reference, NaN without reference lesions.

One ``label`` call per mask, then the labels under the overlap voxels: no loop over components.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class LesionCounts:
    """Lesion counts of one class in one case.

    Attributes:
        n_ref: reference lesions.
        n_found: reference lesions overlapped by at least one predicted voxel.
        n_pred: predicted components.
        n_false_positive: predicted components that overlap no reference lesion.
    """

    n_ref: int
    n_found: int
    n_pred: int
    n_false_positive: int

    @property
    def recall(self) -> float:
        return self.n_found / self.n_ref if self.n_ref else float("nan")

    def to_json(self) -> dict[str, float]:
        return {
            "lesions_ref": self.n_ref,
            "lesions_found": self.n_found,
            "lesions_pred": self.n_pred,
            "lesions_fp": self.n_false_positive,
            "lesion_recall": self.recall,
        }


def lesion_counts(pred_mask: np.ndarray, ref_mask: np.ndarray) -> LesionCounts:
    """Lesions found and false positives of two boolean masks of the same shape (any number of axes)."""
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"mask shapes differ: {pred_mask.shape} vs {ref_mask.shape}")
    structure = np.ones((3,) * ref_mask.ndim, dtype=bool)  # full connectivity: 26 neighbours in 3D
    ref_lesions, n_ref = ndimage.label(ref_mask, structure)
    pred_lesions, n_pred = ndimage.label(pred_mask, structure)
    overlap = (ref_lesions > 0) & (pred_lesions > 0)
    n_found = _n_distinct(ref_lesions[overlap], n_ref)
    n_touching = _n_distinct(pred_lesions[overlap], n_pred)
    return LesionCounts(n_ref=n_ref, n_found=n_found, n_pred=n_pred, n_false_positive=n_pred - n_touching)


def _n_distinct(component_ids: np.ndarray, n_components: int) -> int:
    """How many of the components 1..n_components occur in ``component_ids``."""
    return int(np.count_nonzero(np.bincount(component_ids, minlength=n_components + 1)[1:]))

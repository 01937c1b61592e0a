"""Intensity normalisation per channel (nnU-Net reference §4.2), applied after cropping, before resampling."""

from __future__ import annotations

import math

import numpy as np

from clinix.errors import ClinixError
from clinix.plan.model import ChannelNormalization

EPSILON = 1e-8  # floor of the standard deviation, as nnU-Net
SCHEMES = ("ct", "zscore", "none")


def normalize_image(image: np.ndarray, body: np.ndarray, schemes: list[ChannelNormalization]) -> np.ndarray:
    """Normalise every channel with its scheme.

    Args:
        image: ``(C, z, y, x)``, cropped.
        body: ``(z, y, x)`` bool, the filled nonzero mask of the crop (the voxels labelled ≥ 0).
        schemes: one per channel, from the plan.

    Returns:
        ``(C, z, y, x)`` float32, a new array.
    """
    if len(schemes) != image.shape[0]:
        raise ClinixError(f"the plan normalises {len(schemes)} channels but the image has {image.shape[0]}")
    check_normalization(schemes)
    return np.stack([normalize_channel(channel, body, scheme) for channel, scheme in zip(image, schemes, strict=True)])


def normalize_channel(channel: np.ndarray, body: np.ndarray, scheme: ChannelNormalization) -> np.ndarray:
    """One ``(z, y, x)`` channel -> float32 of the same shape (``scheme`` passed ``check_normalization``)."""
    values = channel.astype(np.float32)
    if scheme.scheme == "ct":
        return ct_normalize(values, scheme)
    if scheme.scheme == "zscore":
        return zscore_normalize(values, body if scheme.use_nonzero_mask else None)
    return values  # "none"


def check_normalization(schemes: list[ChannelNormalization]) -> None:
    """Raise ClinixError for a scheme that cannot normalise (unknown, or CT without finite statistics)."""
    for scheme in schemes:
        if scheme.scheme not in SCHEMES:
            raise ClinixError(f"channel {scheme.name!r}: unknown normalization scheme {scheme.scheme!r}")
        stats = [scheme.mean, scheme.std, scheme.lower, scheme.upper]
        if scheme.scheme == "ct" and any(v is None or not math.isfinite(v) for v in stats):
            raise ClinixError(
                f"channel {scheme.name!r}: CT normalization needs finite mean, std, lower and upper, found {stats}; "
                "re-run 'clinix plan'"
            )


def ct_normalize(values: np.ndarray, scheme: ChannelNormalization) -> np.ndarray:
    """Clip to the dataset's foreground [lower, upper] percentiles, then z-score with its foreground mean/std."""
    lower, upper, mean, std = (float(v) for v in (scheme.lower, scheme.upper, scheme.mean, scheme.std))  # type: ignore[arg-type]
    np.clip(values, lower, upper, out=values)
    values -= mean
    values /= max(std, EPSILON)
    return values


def zscore_normalize(values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Z-score with the image's own mean/std; with a mask, over the mask only and 0 outside it."""
    if mask is None:
        mean, std = float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))
        values -= mean
        values /= max(std, EPSILON)
        return values
    inside = values[mask]
    mean = float(inside.mean(dtype=np.float64)) if inside.size else 0.0
    std = float(inside.std(dtype=np.float64)) if inside.size else 0.0
    normalized = np.zeros_like(values)
    normalized[mask] = (inside - mean) / max(std, EPSILON)
    return normalized

"""Dataset fingerprint: per-case geometry and crop boxes, intensity statistics, label fractions."""

from clinix.fingerprint.extract import (
    CaseFingerprint,
    Fingerprint,
    body_crop_box,
    ct_channels,
    extract_fingerprint,
    load_fingerprint,
    nonzero_crop_box,
)

__all__ = [
    "CaseFingerprint",
    "Fingerprint",
    "body_crop_box",
    "ct_channels",
    "extract_fingerprint",
    "load_fingerprint",
    "nonzero_crop_box",
]

"""Dataset fingerprint: per-case geometry and crop boxes, intensity statistics, label fractions."""

from clinix.fingerprint.extract import (
    FINGERPRINT_FILE,
    CaseFingerprint,
    Fingerprint,
    body_crop_box,
    ct_channels,
    extract_fingerprint,
    load_fingerprint,
    nonzero_crop_box,
)

__all__ = [
    "FINGERPRINT_FILE",
    "CaseFingerprint",
    "Fingerprint",
    "body_crop_box",
    "ct_channels",
    "extract_fingerprint",
    "load_fingerprint",
    "nonzero_crop_box",
]

"""From the preprocessed grid back to the original image grid (nnU-Net reference §6.4).

Resample to the shape after cropping (from the plan's spacing to the original spacing, with the
probability order and the separate-axis rule), then un-crop: outside the crop box is background.
One class channel is resampled at a time, so memory holds the output plus one full-size channel.
"""

from __future__ import annotations

import numpy as np

from clinix.io.labels import LabelSet
from clinix.plan.model import Plan
from clinix.preprocess.case import CaseProperties
from clinix.preprocess.crop import box_slices, uncrop
from clinix.preprocess.resample import resample_labels, resample_volume, resampled_argmax


def restore_probabilities(probabilities: np.ndarray, properties: CaseProperties, plan: Plan) -> np.ndarray:
    """Class (or region) probabilities ``(K, z, y, x)`` on the preprocessed grid -> ``(K, Z, Y, X)`` float32
    on the original.

    Outside the crop box the background class is 1 and every other channel 0 (every region 0).
    """
    order = plan.resampling.probability_order
    restored = np.zeros((probabilities.shape[0], *properties.original_shape), dtype=np.float32)
    if not plan.labels.is_region_based:
        restored[0] = 1.0
    crop = box_slices(properties.crop_box)
    for k, channel in enumerate(probabilities):
        restored[(k, *crop)] = resample_volume(
            channel,
            properties.shape_after_crop,
            properties.target_spacing,
            properties.original_spacing,
            order,
            plan.resampling,
        )
    return restored


def restore_label_map(prediction: np.ndarray, properties: CaseProperties, plan: Plan) -> np.ndarray:
    """A label map ``(z, y, x)`` or probabilities ``(K, z, y, x)`` -> labels ``(Z, Y, X)`` on the original grid.

    Classes: the argmax of ``restore_probabilities`` (a label map is one-hot encoded first; −1, "outside
    the body", counts as background), computed one class at a time. Regions: each region's probability,
    resampled one at a time, writes its value where it exceeds 0.5, later regions over earlier ones
    (``LabelSet.region_values``). Returns uint8, or uint16 when a label exceeds 255.
    """
    order = plan.resampling.probability_order
    spacings = (properties.target_spacing, properties.original_spacing)
    if prediction.ndim == 3:
        background_outside = np.where(prediction < 0, 0, prediction)
        labels = resample_labels(background_outside, properties.shape_after_crop, *spacings, plan.resampling, order)
    elif plan.labels.is_region_based:
        labels = np.zeros(properties.shape_after_crop, dtype=np.int16)
        for region, value in zip(prediction, plan.labels.region_values(), strict=True):
            resampled = resample_volume(region, properties.shape_after_crop, *spacings, order, plan.resampling)
            labels[resampled > 0.5] = value
    else:
        channels = enumerate(prediction)
        labels = resampled_argmax(channels, properties.shape_after_crop, *spacings, order, plan.resampling)
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    return uncrop(labels.astype(dtype), properties.crop_box, tuple(properties.original_shape))


def labels_from_probabilities(probabilities: np.ndarray, labels: LabelSet) -> np.ndarray:
    """Probabilities ``(K, Z, Y, X)`` on the original grid (e.g. an ensemble's mean) -> labels ``(Z, Y, X)``.

    The rule of ``restore_label_map`` without resampling: the argmax for classes; for regions each
    region's value where its probability exceeds 0.5, later regions over earlier ones. uint8 (uint16 above
    255).
    """
    if labels.is_region_based:
        result = np.zeros(probabilities.shape[1:], dtype=np.int16)
        for region, value in zip(probabilities, labels.region_values(), strict=True):
            result[region > 0.5] = value
    else:
        result = np.argmax(probabilities, axis=0)
    dtype = np.uint8 if result.max(initial=0) < 256 else np.uint16
    return result.astype(dtype)

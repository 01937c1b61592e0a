"""nnU-Net's training augmentation of a batch, in torch, on the batch's device (reference §5.3, §5.4).

Order: rotation and scaling with the centre crop (one resampling), Gaussian noise, Gaussian blur,
multiplicative brightness, contrast, simulated low resolution, inverted gamma, gamma, mirroring, and
finally the outside label −1 mapped to ``map_outside_to``. Each sample draws its own chances and
parameters from one CPU ``torch.Generator``: the same seed gives the same batch on the same device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from clinix.train.augment_intensity import (
    contrast,
    gamma,
    gaussian_blur,
    gaussian_noise,
    multiplicative_brightness,
    simulate_low_resolution,
)
from clinix.train.augment_spatial import (
    OUTSIDE_LABEL,
    centre_crop,
    default_rotation,
    enlarged_patch_size,
    is_dummy_2d,
    mirror,
    spatial_transform,
)

__all__ = ["AugmentationSettings", "augment_batch", "enlarged_patch_size", "map_outside_label"]


@dataclass(frozen=True)
class AugmentationSettings:
    """Chances (per sample unless named per channel / per axis) and ranges, nnU-Net's defaults (§5.4).

    ``rotation_degrees`` None means ±30°, or ±180° for a dummy-2D patch; ``rotation_axes`` None means all
    three, or axis 0 only for a dummy-2D patch. ``enabled`` False keeps only the centre crop and the
    outside-label mapping (nnU-Net's validation transforms).
    """

    enabled: bool = True
    p_rotation: float = 0.2
    rotation_degrees: tuple[float, float] | None = None
    rotation_axes: tuple[int, ...] | None = None
    p_scaling: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    p_noise: float = 0.1
    noise_std_range: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma_range: tuple[float, float] = (0.5, 1.0)
    blur_p_per_channel: float = 0.5
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_low_resolution: float = 0.25
    low_resolution_zoom_range: tuple[float, float] = (0.5, 1.0)
    low_resolution_p_per_channel: float = 0.5
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_mirror_per_axis: float = 0.5
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    map_outside_to: int = 0


def map_outside_label(seg: torch.Tensor, value: int = 0) -> torch.Tensor:
    """``seg`` with the outside label −1 replaced by ``value`` (nnU-Net's RemoveLabel)."""
    return seg.masked_fill(seg == OUTSIDE_LABEL, value)


def augment_batch(
    data: torch.Tensor,
    seg: torch.Tensor,
    patch_size: Sequence[int],
    generator: torch.Generator,
    settings: AugmentationSettings = AugmentationSettings(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment a sampled batch and cut it to the plan patch.

    Args:
        data: ``(B, C, *P)`` float32 images, ``P`` the sampled (usually enlarged) patch, any device.
        seg: ``(B, 1, *P)`` integer labels, −1 outside the image, same device.
        patch_size: the plan patch ``[z, y, x]``, at most ``P`` per axis.
        generator: CPU generator all random numbers come from.

    Returns:
        data ``(B, C, *patch_size)`` and seg ``(B, 1, *patch_size)`` with −1 mapped to
        ``settings.map_outside_to``.
    """
    if not settings.enabled:
        return centre_crop(data, patch_size), map_outside_label(centre_crop(seg, patch_size), settings.map_outside_to)
    dummy_2d = is_dummy_2d(patch_size)
    default_degrees, default_axes = default_rotation(patch_size)
    in_plane = (1, 2) if dummy_2d else (0, 1, 2)  # dummy-2D scales and coarsens within slices only
    data, seg = spatial_transform(
        data,
        seg,
        patch_size,
        generator,
        p_rotation=settings.p_rotation,
        rotation_range=settings.rotation_degrees or (-default_degrees, default_degrees),
        rotation_axes=settings.rotation_axes if settings.rotation_axes is not None else default_axes,
        p_scaling=settings.p_scaling,
        scale_range=settings.scale_range,
        scale_axes=in_plane,
    )
    data = gaussian_noise(data, generator, settings.p_noise, settings.noise_std_range)
    data = gaussian_blur(data, generator, settings.p_blur, settings.blur_sigma_range, settings.blur_p_per_channel)
    data = multiplicative_brightness(data, generator, settings.p_brightness, settings.brightness_range)
    data = contrast(data, generator, settings.p_contrast, settings.contrast_range)
    data = simulate_low_resolution(
        data,
        generator,
        settings.p_low_resolution,
        settings.low_resolution_zoom_range,
        settings.low_resolution_p_per_channel,
        zoom_axes=in_plane,
    )
    data = gamma(data, generator, settings.p_gamma_inverted, settings.gamma_range, invert=True)
    data = gamma(data, generator, settings.p_gamma, settings.gamma_range, invert=False)
    data, seg = mirror(data, seg, generator, settings.p_mirror_per_axis, settings.mirror_axes)
    return data, map_outside_label(seg, settings.map_outside_to)

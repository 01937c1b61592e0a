"""Intensity augmentation of a batch of images: noise, blur, brightness, contrast, low resolution, gamma.

nnU-Net's transforms 3–9 of reference §5.4, batched in torch. Images are ``(B, C, Z, Y, X)`` on any
device. Each transform draws its CPU random numbers from the caller's generator in a fixed amount
(whether or not a sample is chosen), chooses samples (and channels) by chance, and returns a new tensor,
or the input itself when no sample is chosen. Labels are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from clinix.train.augment_spatial import chance, uniform

BLUR_TRUNCATE = 4.0  # kernel radius in standard deviations, as scipy.ndimage.gaussian_filter
RANGE_EPS = 1e-7


def contrast_factors(generator: torch.Generator, value_range: tuple[float, float], *shape: int) -> torch.Tensor:
    """nnU-Net's BGContrast draw: with chance 0.5 U(low, 1), else U(max(low, 1), high). CPU float64."""
    low, high = value_range
    below_one = chance(generator, 0.5, *shape) & (low < 1)
    draw = torch.rand(shape, generator=generator, dtype=torch.float64)
    upper_low = max(low, 1.0)
    return torch.where(below_one, low + (1 - low) * draw, upper_low + (high - upper_low) * draw)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` or ``(B, C)`` CPU values as a tensor broadcastable against ``like`` ``(B, C, *S)``."""
    shape = (*values.shape, *[1] * (like.ndim - values.ndim))
    return values.reshape(shape).to(device=like.device, dtype=like.dtype)


def _device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded by one draw of ``generator``, for whole-image random fields."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def _replace_chosen(
    data: torch.Tensor, chosen: torch.Tensor, transform: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """A copy of ``data`` whose entries where ``chosen`` (CPU bool over the leading axis) are
    ``transform(those entries, their CPU indices)``; ``data`` itself when nothing is chosen."""
    if not chosen.any():
        return data
    index = chosen.nonzero().flatten()
    on_device = index.to(data.device)
    out = data.clone()
    out[on_device] = transform(data[on_device], index)
    return out


def gaussian_noise(
    data: torch.Tensor, generator: torch.Generator, probability: float, std_range: tuple[float, float]
) -> torch.Tensor:
    """Add N(0, σ²) noise to chosen samples, σ ~ U(std_range) per sample, shared by its channels."""
    chosen = chance(generator, probability, data.shape[0])
    std = uniform(generator, *std_range, data.shape[0])
    field_generator = _device_generator(generator, data.device)

    def add_noise(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(images.shape, generator=field_generator, device=images.device, dtype=images.dtype)
        return images + noise * _per_sample(std[index], images)

    return _replace_chosen(data, chosen, add_noise)


def _gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1D Gaussian kernels ``(N, 2 · radius + 1)`` for standard deviations ``(N,)``."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernels = torch.exp(-0.5 * (offsets[None, :] / sigmas[:, None]) ** 2)
    return kernels / kernels.sum(dim=1, keepdim=True)


def _blur_volumes(volumes: torch.Tensor, sigmas: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, *S)`` volumes with per-volume, per-axis σ ``(N, 3)``; reflect border."""
    out = volumes[None]  # (1, N, *S): one convolution group per volume
    for axis in range(3):
        size = volumes.shape[axis + 1]
        radius = min(int(BLUR_TRUNCATE * sigma_max + 0.5), size - 1)
        if radius == 0:
            continue
        kernel_shape = [len(volumes), 1, 1, 1, 1]
        kernel_shape[axis + 2] = 2 * radius + 1
        kernels = _gaussian_kernels(sigmas[:, axis], radius).reshape(kernel_shape).to(volumes)
        padding = [0] * 6
        padding[2 * (2 - axis) : 2 * (2 - axis) + 2] = [radius, radius]  # F.pad lists the last axis first
        out = F.conv3d(F.pad(out, padding, mode="reflect"), kernels, groups=len(volumes))
    return out[0]


def gaussian_blur(
    data: torch.Tensor,
    generator: torch.Generator,
    probability: float,
    sigma_range: tuple[float, float],
    p_per_channel: float,
) -> torch.Tensor:
    """Blur chosen channels of chosen samples; σ ~ U(sigma_range) independently per axis and channel."""
    batch, channels = data.shape[:2]
    chosen = chance(generator, probability, batch)[:, None] & chance(generator, p_per_channel, batch, channels)
    sigmas = uniform(generator, *sigma_range, batch, channels, 3)
    flat = data.reshape(batch * channels, *data.shape[2:])
    flat_sigmas = sigmas.flatten(0, 1)
    blurred = _replace_chosen(
        flat, chosen.flatten(), lambda volumes, index: _blur_volumes(volumes, flat_sigmas[index], sigma_range[1])
    )
    return blurred.reshape(data.shape)


def multiplicative_brightness(
    data: torch.Tensor, generator: torch.Generator, probability: float, factor_range: tuple[float, float]
) -> torch.Tensor:
    """Multiply each channel of chosen samples by its own BGContrast factor."""
    chosen = chance(generator, probability, data.shape[0])
    factors = contrast_factors(generator, factor_range, *data.shape[:2])
    return _replace_chosen(data, chosen, lambda images, index: images * _per_sample(factors[index], images))


def contrast(
    data: torch.Tensor, generator: torch.Generator, probability: float, factor_range: tuple[float, float]
) -> torch.Tensor:
    """Stretch each channel of chosen samples about its mean by a BGContrast factor, within its old range."""
    chosen = chance(generator, probability, data.shape[0])
    factors = contrast_factors(generator, factor_range, *data.shape[:2])

    def stretch(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        spatial = tuple(range(2, images.ndim))
        mean = images.mean(dim=spatial, keepdim=True)
        low, high = images.amin(dim=spatial, keepdim=True), images.amax(dim=spatial, keepdim=True)
        stretched = (images - mean) * _per_sample(factors[index], images) + mean
        return torch.minimum(torch.maximum(stretched, low), high)  # preserve_range

    return _replace_chosen(data, chosen, stretch)


def simulate_low_resolution(
    data: torch.Tensor,
    generator: torch.Generator,
    probability: float,
    zoom_range: tuple[float, float],
    p_per_channel: float,
    zoom_axes: Sequence[int],
) -> torch.Tensor:
    """Downsample chosen channels (nearest) by a zoom U(zoom_range) along ``zoom_axes``, upsample (trilinear)."""
    batch, channels = data.shape[:2]
    chosen = chance(generator, probability, batch)[:, None] & chance(generator, p_per_channel, batch, channels)
    zooms = uniform(generator, *zoom_range, batch, channels).flatten()
    shape = data.shape[2:]

    def coarsen(volumes: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(volumes)
        for k, zoom in enumerate(zooms[index].tolist()):  # each volume has its own coarse shape
            low_shape = [max(round(s * zoom), 1) if axis in zoom_axes else s for axis, s in enumerate(shape)]
            coarse = F.interpolate(volumes[k][None, None], size=low_shape, mode="nearest-exact")
            out[k] = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=False)[0, 0]
        return out

    flat = data.reshape(batch * channels, *shape)
    return _replace_chosen(flat, chosen.flatten(), coarsen).reshape(data.shape)


def gamma(
    data: torch.Tensor,
    generator: torch.Generator,
    probability: float,
    gamma_range: tuple[float, float],
    invert: bool,
) -> torch.Tensor:
    """Per channel of chosen samples: min-max scale, raise to γ (BGContrast draw), restore range, mean and std.

    With ``invert`` the channel is negated before and after, so γ bends the bright end instead.
    """
    chosen = chance(generator, probability, data.shape[0])
    gammas = contrast_factors(generator, gamma_range, *data.shape[:2])

    def curve(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        spatial = tuple(range(2, images.ndim))
        image = -images if invert else images
        mean, std = image.mean(dim=spatial, keepdim=True), image.std(dim=spatial, keepdim=True, correction=0)
        low = image.amin(dim=spatial, keepdim=True)
        extent = (image.amax(dim=spatial, keepdim=True) - low).clamp(min=RANGE_EPS)
        curved = ((image - low) / extent) ** _per_sample(gammas[index], images) * extent + low
        curved_mean = curved.mean(dim=spatial, keepdim=True)
        curved_std = curved.std(dim=spatial, keepdim=True, correction=0).clamp(min=RANGE_EPS)
        restored = (curved - curved_mean) * (std / curved_std) + mean  # p_retain_stats 1
        return -restored if invert else restored

    return _replace_chosen(data, chosen, curve)

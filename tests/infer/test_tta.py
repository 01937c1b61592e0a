from __future__ import annotations

import numpy as np
import torch

from clinix.infer.tta import mirror_subsets, mirrored_forward


def test_three_axes_give_eight_passes_identity_first() -> None:
    subsets = mirror_subsets([2, 0, 1])
    assert subsets[0] == () and len(subsets) == 8 and len(set(subsets)) == 8
    assert mirror_subsets([1]) == [(), (1,)]


def test_a_mirror_equivariant_network_gives_the_same_logits_with_and_without_tta() -> None:
    torch.manual_seed(0)
    pointwise = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 1), torch.nn.Tanh(), torch.nn.Conv3d(3, 3, 1))
    batch = torch.randn(2, 2, 5, 6, 7)
    with torch.no_grad():
        plain = pointwise(batch)
        mirrored = mirrored_forward(pointwise, (0, 1, 2))(batch)
    torch.testing.assert_close(mirrored, plain, rtol=1e-6, atol=1e-6)


def position_logits(batch: torch.Tensor) -> torch.Tensor:
    """A network that ignores its input: logit = z + 10·y + 100·x, the voxel's position in the tile."""
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in batch.shape[2:]), indexing="ij")
    return (z + 10 * y + 100 * x).expand(batch.shape[0], 1, *batch.shape[2:])


def test_tta_averages_the_flipped_back_predictions() -> None:
    batch = torch.zeros(1, 1, 4, 6, 8)
    # flipping axis a maps position i to (n_a − 1 − i): the mean over both is (n_a − 1) / 2 on that axis
    all_axes = mirrored_forward(position_logits, (0, 1, 2))(batch)
    assert torch.all(all_axes == 1.5 + 10 * 2.5 + 100 * 3.5)
    only_y = mirrored_forward(position_logits, (1,))(batch)[0, 0].numpy()
    z, _, x = np.meshgrid(np.arange(4), np.arange(6), np.arange(8), indexing="ij")
    np.testing.assert_array_equal(only_y, z + 10 * 2.5 + 100 * x)


def test_no_axes_means_the_network_alone() -> None:
    assert mirrored_forward(position_logits, ()) is position_logits
    assert mirrored_forward(position_logits, None) is position_logits

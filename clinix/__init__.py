"""clinix: 3D medical image segmentation with a self-configuring HGCN + Mamba U-Net."""

import os
import sys

__version__ = "0.1.0"

# PyTorch's CPU allocator backs tensors of 2 MB and more with transparent huge pages when this is set
# (read at its first large allocation). Without it every large activation is a fresh mmap that the kernel
# zeroes 4 KB page by page: a 48×128×160 training step spent 40 % of its time in those page faults.
# Export THP_MEM_ALLOC_ENABLE=0 to turn it off.
if sys.platform.startswith("linux"):
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

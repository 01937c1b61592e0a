"""clinix: 3D medical image segmentation with a self-configuring HGCN + Mamba U-Net."""

__version__ = "0.1.0"

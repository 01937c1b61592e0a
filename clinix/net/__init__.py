"""Networks: blocks, the MambaClinix U-Net and its ablation families (SPEC §4)."""

from clinix.net.network import ClinixUNet, NetworkConfig
from clinix.net.registry import ARCH_NAMES, build_network, config_for_arch

__all__ = ["ARCH_NAMES", "ClinixUNet", "NetworkConfig", "build_network", "config_for_arch"]

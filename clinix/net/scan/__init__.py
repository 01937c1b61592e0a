"""Selective-scan backends (SPEC §4.5): ``selective_scan`` picks one, ``active_scan_backend`` names it.

See ``dispatch.py`` for the arguments and the backends, ``reference.py`` for the sequential yardstick.
"""

from clinix.net.scan.dispatch import active_scan_backend, selective_scan
from clinix.net.scan.reference import selective_scan_reference

__all__ = ["active_scan_backend", "selective_scan", "selective_scan_reference"]

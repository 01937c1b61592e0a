"""Selective-scan backends (SPEC §4.5). Only the sequential reference exists so far."""

from clinix.net.scan.reference import selective_scan_reference

selective_scan = selective_scan_reference

__all__ = ["selective_scan", "selective_scan_reference"]

"""The synthetic CT phantom used by the demo and the tests."""

from clinix.data.phantom import make_phantom_case, write_phantom_dataset

__all__ = ["make_phantom_case", "write_phantom_dataset"]

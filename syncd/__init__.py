"""syncd: two-way contact synchronization between a canonical SQL book and SMS providers."""

__version__ = "0.1.0"

"""The one place the package version is written (pyproject's `version` must match it)."""

__version__ = "0.1.0"

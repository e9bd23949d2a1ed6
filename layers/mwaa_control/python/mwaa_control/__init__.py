"""Shared domain package of the MWAA control plane (deployed as a Lambda layer)."""

__version__ = "0.1.0"

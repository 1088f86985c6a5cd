"""The package version, one place for it (read by pyproject.toml and recorded in adapters)."""

__version__ = "0.2.0"

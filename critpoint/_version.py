"""The version of critpoint (one home: the package, its documents and pyproject read it)."""

__version__ = "0.1.0"

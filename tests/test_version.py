"""critpoint._version: one version, read by the package, its documents and the build."""

from importlib.metadata import version

import critpoint
from critpoint._json import header
from critpoint._version import __version__


def test_one_version_everywhere():
    assert critpoint.__version__ is __version__
    assert version("critpoint") == __version__  # pyproject reads _version.py
    assert header("critpoint.x", 1)["critpoint_version"] == __version__

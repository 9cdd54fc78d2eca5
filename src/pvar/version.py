"""The package version, read one way: the installed distribution's metadata (from pyproject.toml)."""

from importlib import metadata

try:
    __version__ = metadata.version("pvar")
except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"

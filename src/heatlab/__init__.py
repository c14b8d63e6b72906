"""heatlab."""
__version__ = "0.1.0"  # the one place the version is set (pyproject.toml reads it; `heatlab --version` prints it)

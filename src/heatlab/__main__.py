"""``python -m heatlab``: the same command as ``heatlab``."""

from heatlab.cli import main

if __name__ == "__main__":
    main()

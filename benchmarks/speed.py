"""Speed and memory benchmark of the rnnguard layers; same as ``rnnguard speed`` (see --help)."""

import sys

from rnnguard.cli.speed import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

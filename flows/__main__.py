"""`python -m flows ...` is the `fusionrx` console script."""

import sys

from flows.cli import main

if __name__ == "__main__":  # not when a spawn / forkserver worker re-imports the main module
    sys.exit(main())

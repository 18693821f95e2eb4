"""`python -m flows ...` is the `fusionrx` console script."""

import sys

from flows.cli import main

sys.exit(main())

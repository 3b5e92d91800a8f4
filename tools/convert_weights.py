#!/usr/bin/env python3
"""`python tools/convert_weights.py` runs `ssd-convert` (the code is in ssd/cli/convert.py)."""

import sys

from ssd.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m pixelseg``: the CLI, so that ``torchrun ... -m pixelseg train CONFIG`` works."""

from __future__ import annotations

import sys

from pixelseg.cli import main

if __name__ == "__main__":
    sys.exit(main())

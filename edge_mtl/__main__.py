"""`python -m edge_mtl ...`: the `edge-mtl` command."""

import sys

from edge_mtl.commands.cli import main

if __name__ == "__main__":
    sys.exit(main())

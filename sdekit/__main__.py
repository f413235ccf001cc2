"""`python -m sdekit`: the `sdekit` command."""

import sys

from .cli import main


sys.exit(main())

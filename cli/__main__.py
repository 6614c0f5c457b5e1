"""``python -m cli``: the `asset-cycle` command line."""

import sys

from cli.main import main

sys.exit(main())

"""The `asset-cycle` sub-commands, one module each (``register(subparsers)``)."""

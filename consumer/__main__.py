"""Allow ``python -m consumer`` as an alias of the ``basicsync`` console script."""

from consumer.cli import main

raise SystemExit(main())

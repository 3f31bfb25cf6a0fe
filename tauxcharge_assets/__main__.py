"""``python -m tauxcharge_assets``: the command line (``cli/main.py``)."""

from tauxcharge_assets.cli.main import main

raise SystemExit(main())

"""``python -m smarttags``: the same command as the ``smarttags`` console script."""

import sys

from smarttags.entrypoints.cli import main

sys.exit(main())

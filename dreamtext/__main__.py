"""``python -m dreamtext``: the ``dreamtext`` command, for when the script is not on PATH."""

import sys

from dreamtext.cli import main

sys.exit(main())

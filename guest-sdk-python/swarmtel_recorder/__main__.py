"""``python -m swarmtel_recorder build my_plugin.py``: the same as ``swarmtel-recorder``."""

import sys

from .build import main

sys.exit(main())

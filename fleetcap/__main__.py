"""`python -m fleetcap` runs the `fleetcap` command."""

import sys

from fleetcap.main import main

sys.exit(main())

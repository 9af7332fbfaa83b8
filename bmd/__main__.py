import sys

from bmd.cli import main

sys.exit(main())

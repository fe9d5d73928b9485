import sys

from dpot.cli import main

sys.exit(main())

import sys

from mrnet_utils.cli import main

sys.exit(main())

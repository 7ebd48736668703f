import sys

from learn2hash.cli import main

sys.exit(main())

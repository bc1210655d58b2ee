import sys

from continuation.apps.cli import main

sys.exit(main())

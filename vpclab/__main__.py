import sys

from vpclab.cli.main import main

sys.exit(main())

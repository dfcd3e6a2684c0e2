import sys

from vpclab.daemon.main import main

sys.exit(main())

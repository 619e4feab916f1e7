import os
import sys

if sys.argv[1:2] == ["run"]:
    from .stop import install_handlers
    install_handlers()          # before anything heavy is imported (see rewl/stop.py)

from .cli import main  # noqa: E402

try:
    sys.exit(main())
except BrokenPipeError:
    # output piped into `head` and the like: stop quietly, as Unix tools do
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)

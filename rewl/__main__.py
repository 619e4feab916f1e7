"""``python -m rewl``: the same as the ``rewl`` command."""
from .console import main

main()

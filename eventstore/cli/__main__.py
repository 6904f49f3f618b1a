"""``python -m eventstore.cli``."""

from . import main

main()

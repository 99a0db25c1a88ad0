"""``python -m ofakit`` (and ``torchrun -m ofakit train ...``)."""

from ofakit.cli import main

main()

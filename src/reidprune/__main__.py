"""`python -m reidprune ...` (and `torchrun -m reidprune ...`): the same CLI as the `reidprune` script."""

from reidprune.cli import main

main()

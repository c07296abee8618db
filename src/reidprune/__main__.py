"""`python -m reidprune ...` (and `torchrun -m reidprune ...`): the same CLI as the `reidprune` script."""

from reidprune.cli import main

# guarded so that worker processes started with spawn / forkserver do not run the CLI again
if __name__ == "__main__":
    main()

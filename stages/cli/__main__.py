"""`python -m stages.cli`: the same as the `ses-sender` console script."""

from stages.cli.app import main

main()

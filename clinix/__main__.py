"""``python -m clinix`` runs the CLI."""

from clinix.cli import main

main()

"""``python -m latentlit.cli`` runs the ``latentlit`` command."""

from latentlit.cli.entry import main

main()

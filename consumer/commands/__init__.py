"""Subcommands of the ``basicsync`` console command, one module each."""

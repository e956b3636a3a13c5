"""Command-line integration with ``optimum-cli``: parsing and printing only."""

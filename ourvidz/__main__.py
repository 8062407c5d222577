"""`python -m ourvidz` runs the CLI."""

from ourvidz.cli import app

app()

"""The command line: one module per command group over the library (app.py holds the Typer app
and the one place that maps errors to exit codes)."""

"""CLI command modules; each exposes `register(group)`. cli.py lists them."""

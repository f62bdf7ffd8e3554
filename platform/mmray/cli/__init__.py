"""The `mmray` command line: parses arguments, builds typed configs, calls one library function."""

from mmray.cli.app import app, main

__all__ = ["app", "main"]

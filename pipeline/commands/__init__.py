"""Subcommands of `ringfence`: one module each, discovered by `pipeline.cli`."""

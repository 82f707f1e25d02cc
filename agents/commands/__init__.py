"""Subcommands of `ringfence-agent`: one module each, discovered by `agents.cli`."""

"""`ringfence console`: the SOC web console (live alerts, process trees, fleet, audited actions)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from schemas.cli_support import CliError

DESCRIPTION = """\
The SOC web console: a live alert list (server-sent events), each alert's process tree with its
evidence and top features, the fleet (devices, groups, modes, last seen, blocklist size), and the
actions — lift a verdict, restore a quarantined file, switch a group between audit and block, mark
a false positive (a scoped, expiring exclusion).

Listens on 127.0.0.1:8080 by default: reach it through an SSH tunnel or a reverse proxy (give the
proxy's host name with --allowed-host). Pages are readable without a token; every action needs
`Authorization: Bearer <token>` (the page asks for the token and keeps it for the tab only) and is
recorded on ringfence.audit.v1 with who, what and when, whether it was accepted or refused.

Tokens: RINGFENCE_CONSOLE_TOKEN and/or --token-file (lines `TOKEN` or `NAME:TOKEN`, mode 0600);
NAME is the actor in the audit record. Without any token the console is read-only.
Lift and restore publish records signed with the fleet key: --signing-key (the file written by
`ringfence keys init`) or RINGFENCE_CONSOLE_SIGNING_KEY_FILE.
The cluster is RINGFENCE_KAFKA_BOOTSTRAP (or --bootstrap), else the local broker 127.0.0.1:9092.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("console", help="the SOC web console (alerts, trees, fleet, audited actions)",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--token-file", type=Path, default=None,
                        help="analyst tokens, one `TOKEN` or `NAME:TOKEN` per line (mode 0600)")
    parser.add_argument("--signing-key", type=Path, default=None, dest="signing_key_file",
                        help="the fleet's Ed25519 private key, for lift and restore")
    parser.add_argument("--allowed-host", action="append", default=None, dest="allowed_hosts",
                        help="another Host header name to answer (a reverse proxy's); repeatable")
    parser.add_argument("--prefix", default=None, dest="topic_prefix",
                        help="prefix of the topic names (isolated test topic sets)")
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka bootstrap servers (default: $RINGFENCE_KAFKA_BOOTSTRAP)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from pydantic import ValidationError

    from pipeline.soc.console_runtime import serve
    from pipeline.soc.errors import SocError
    from pipeline.soc.settings import ConsoleSettings, kafka_settings

    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("host", "port", "token_file", "signing_key_file", "allowed_hosts", "topic_prefix")
        if getattr(args, name) is not None
    }
    try:
        settings = ConsoleSettings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(map(str, error["loc"]))
        raise CliError(f"invalid console setting {where}: {error['msg']}") from None
    try:
        asyncio.run(serve(settings, kafka_settings(args.bootstrap), on_ready=_announce))
    except SocError as exc:
        raise CliError(str(exc), exit_code=1) from None
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        raise CliError(f"cannot listen on {where}: {exc.strerror or exc}", exit_code=1) from None
    return 0


def _announce(url: str) -> None:
    print(f"ringfence console: {url} (Ctrl-C to stop)", flush=True)

"""`ringfence schemas export|check|validate`: publish the contracts' JSON Schemas, check a record.

For integrators: `export` writes one JSON Schema per contract (what each topic carries);
`validate` decodes a record file with the same codec the pipeline uses and prints the typed error
(class, field path, ids) it would dead-letter, so a producer can be debugged without a broker.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from schemas.cli_support import CliError

DESCRIPTION = """\
Work with the ringfence topic contracts (pydantic models in `schemas/`).

  export    write one JSON Schema file per contract (default directory: schemas/json)
  check     exit 1 if the files in the directory differ from what the models generate
  validate  decode a record (file or '-' for stdin) as a contract and report the first problem

Contracts: behavior_event, event_batch, alert, verdict, command, action_result, heartbeat,
device_record, dead_letter. `validate --contract events` accepts a batch or a single event, as the
events topic does.
"""

_DEFAULT_DIR_TEXT = "schemas/json in the package"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("schemas", help="export JSON Schemas of the topic contracts, validate records",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write schemas/json/*.json", description="Write one JSON "
                                "Schema file per contract into --out (created if missing).")
    export.add_argument("--out", type=Path, default=None, help=f"directory (default: {_DEFAULT_DIR_TEXT})")
    export.set_defaults(func=_export)
    check = actions.add_parser("check", help="fail if the exported schemas are stale",
                               description="Exit 1 and list the files that differ from the models.")
    check.add_argument("--dir", type=Path, default=None, help=f"directory (default: {_DEFAULT_DIR_TEXT})")
    check.set_defaults(func=_check)
    validate = actions.add_parser("validate", help="decode a record file as a contract",
                                  description="Decode FILE ('-' = stdin) with the pipeline's codec; exit 0 "
                                  "if valid, 1 with the typed error otherwise.")
    validate.add_argument("file", help="record value file, or '-' for stdin")
    validate.add_argument("--contract", default="events", help="contract name or 'events' (default)")
    validate.set_defaults(func=_validate)


def _export(args: argparse.Namespace) -> int:
    from schemas import jsonschema

    try:
        written = jsonschema.export(args.out or jsonschema.DEFAULT_DIR)
    except OSError as exc:
        raise CliError(f"cannot write schemas: {exc}") from None
    for path in written:
        print(path)
    return 0


def _check(args: argparse.Namespace) -> int:
    from schemas import jsonschema

    stale = jsonschema.stale_files(args.dir or jsonschema.DEFAULT_DIR)
    for name in stale:
        print(f"stale: {name}")
    if stale:
        print("run `ringfence schemas export` and commit the result", file=sys.stderr)
    return 1 if stale else 0


def _validate(args: argparse.Namespace) -> int:
    from schemas import codec, jsonschema
    from schemas.errors import ContractError

    if args.contract != "events" and args.contract not in jsonschema.CONTRACTS:
        names = ", ".join(["events", *jsonschema.CONTRACTS])
        raise CliError(f"unknown contract {args.contract!r}; one of: {names}")
    data = _read(args.file)
    try:
        if args.contract == "events":
            batch = codec.decode_record(data)
            print(f"ok: batch of {len(batch.events)} event(s) from {batch.device_id}")
        else:
            model = codec.decode(jsonschema.CONTRACTS[args.contract], data)
            print(f"ok: {type(model).__name__}")
    except ContractError as exc:
        print(f"{exc.error_class}: {exc}")
        for issue in getattr(exc, "issues", ())[1:20]:
            print(f"  also: {issue}")
        return 1
    return 0


def _read(name: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror}") from None

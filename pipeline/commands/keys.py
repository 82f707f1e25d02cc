"""`ringfence keys init|rotate|show`: the fleet's Ed25519 signing key and the public keyring agents trust."""

from __future__ import annotations

import argparse
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.cli_support import CliError

if TYPE_CHECKING:
    from pipeline.enroll import KeysFolder

DESCRIPTION = """\
The fleet service signs every verdict and command with one Ed25519 key; agents verify with the
public keyring they received at enrollment.

  init     create the signing key (signing.pem, mode 0600, in a 0700 folder) and keyring.json
  rotate   make a new active key; the old one stays in keyring.json with not_after = now + OVERLAP:
           agents accept what it signs until then and keep honouring verdicts it signed before
           then. Within the window: hand devices the new keyring, then restart the workers.
  show     list the keyring: active key, keys in their rotation window, retired keys

The folder is --dir, else $RINGFENCE_KEYS_DIR, else ./.ringfence/keys.
"""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("keys", help="create, rotate or show the fleet's signing keys",
                            description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    init = actions.add_parser("init", help="create the fleet signing key and keyring",
                              description="Create signing.pem (0600) and keyring.json in the keys folder.")
    init.add_argument("--force", action="store_true",
                      help="replace an existing key (agents stop trusting it)")
    init.set_defaults(func=_init)
    rotate = actions.add_parser("rotate", help="new active key; the old one trusted for --overlap",
                                description="Generate a new signing key; keep the old public key trusted "
                                "for what it signs within the overlap window.")
    rotate.add_argument("--overlap", type=parse_duration, default=timedelta(days=7),
                        help="how long the old key may still sign, e.g. 7d, 12h, 0 (default 7d)")
    rotate.set_defaults(func=_rotate)
    show = actions.add_parser("show", help="list the keys of the keyring", description="List the keyring.")
    show.set_defaults(func=_show)
    for action in (init, rotate, show):
        action.add_argument("--dir", type=Path, default=None,
                            help="keys folder (default: $RINGFENCE_KEYS_DIR, else ./.ringfence/keys)")


def default_keys_dir() -> Path:
    """The keys folder when --dir is not given."""
    return Path(os.environ.get("RINGFENCE_KEYS_DIR", "").strip() or ".ringfence/keys")


def keys_folder(path: Path | None) -> KeysFolder:
    from pipeline.enroll import KeysFolder

    return KeysFolder(path or default_keys_dir())


def parse_duration(text: str) -> timedelta:
    """`90`, `90s`, `15m`, `12h`, `7d` -> timedelta (argparse type)."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 7d, 12h, 15m or 90s")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def _init(args: argparse.Namespace) -> int:
    from pipeline.enroll import EnrollmentError

    folder = keys_folder(args.dir)
    try:
        key = folder.init(datetime.now(UTC), force=args.force)
    except EnrollmentError as exc:
        raise CliError(str(exc)) from None
    print(f"created fleet signing key {key.key_id}")
    print(f"  private key  {folder.signing_key_path}  (0600: only the pipeline workers read it)")
    print(f"  keyring      {folder.keyring_path}  (public: handed to devices at enrollment)")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from pipeline.enroll import EnrollmentError

    folder = keys_folder(args.dir)
    try:
        new, retired = folder.rotate(datetime.now(UTC), args.overlap)
    except EnrollmentError as exc:
        raise CliError(str(exc)) from None
    until = retired.not_after.isoformat() if retired.not_after else "?"
    print(f"new active key {new.key_id}; {retired.key_id} trusted for new signatures until {until}")
    print(f"next: give devices the new keyring ({folder.keyring_path}), then restart the pipeline "
          "workers (they sign with the new key from then on), all before that time")
    return 0


def _show(args: argparse.Namespace) -> int:
    from pipeline.enroll import EnrollmentError

    folder = keys_folder(args.dir)
    try:
        keyring = folder.keyring_file()
        active = folder.signing_key().key_id if folder.signing_key_path.exists() else None
    except EnrollmentError as exc:
        raise CliError(str(exc)) from None
    now = datetime.now(UTC)
    print(f"{'KEY ID':<26} {'CREATED':<20} STATUS")
    for entry in keyring.keys:
        if entry.key_id == active:
            status = "active (signs)"
        elif entry.not_after is None:
            status = "trusted"
        elif entry.not_after > now:
            status = f"rotating out: trusted until {entry.not_after:%Y-%m-%d %H:%M}Z"
        else:
            status = f"retired {entry.not_after:%Y-%m-%d %H:%M}Z (verifies older records only)"
        print(f"{entry.key_id:<26} {entry.created_at:%Y-%m-%d %H:%M}Z     {status}")
    return 0

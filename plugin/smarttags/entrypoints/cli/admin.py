"""``smarttags validate`` and ``smarttags admin [create-user]``: the status checks and the admin panel."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from smarttags.entrypoints.cli.common import services
from smarttags.settings import Settings


def _validate(settings: Settings, args: argparse.Namespace) -> int:
    from smarttags.entrypoints import health

    checks = health.validate(services(settings))
    print(health.as_text(checks))
    return 0 if all(c.ok for c in checks) else 1


def _admin(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "create-user":
        return _create_user(settings, args)
    from smarttags.entrypoints.admin import create_app

    host = args.host or settings.admin.host
    port = args.port or settings.admin.port
    app = create_app(settings, debug=args.debug)
    if args.debug:
        app.run(host=host, port=port, debug=True, use_reloader=False)
        return 0
    import waitress

    print(f"SmartTags admin on http://{host}:{port}/")
    waitress.serve(app, host=host, port=port, threads=8, ident="smarttags")
    return 0


def _create_user(settings: Settings, args: argparse.Namespace) -> int:
    import getpass

    from smarttags.core.users import UserStore

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Repeat it: ") != password:
            print("smarttags: the passwords differ", file=sys.stderr)
            return 2
    user = UserStore(services(settings).index).create(args.name, password, args.role)
    print(f"created user {user.username} with role {user.role}")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("validate", help="check the configuration and services (exit 1 if any check fails)")
    p.set_defaults(handler=_validate)

    admin = sub.add_parser("admin", help="serve the admin panel (waitress), or manage its users")
    admin.add_argument("--host", help="default: admin.host")
    admin.add_argument("--port", type=int, help="default: admin.port")
    admin.add_argument("--debug", action="store_true", help="Flask's development server (no secret key needed)")
    admin.set_defaults(handler=_admin, action=None)
    actions = admin.add_subparsers(dest="action", metavar="ACTION")
    p = actions.add_parser("create-user", help="create an admin-panel user (password from a prompt or stdin)")
    p.add_argument("name")
    p.add_argument("--role", choices=["admin", "moderator", "viewer"], required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")

"""Login, logout, the current user and role checks."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from smarttags.core.logins import Attempt
from smarttags.core.users import User, role_allows

bp = Blueprint("auth", __name__)
F = TypeVar("F", bound=Callable[..., Any])
PUBLIC_ENDPOINTS = {"auth.login", "static"}


def ctx() -> Any:
    return current_app.extensions["smarttags"]


def current_user() -> User | None:
    user: User | None = g.get("user")
    return user


def load_user() -> WerkzeugResponse | None:
    """Before every request: who is logged in; everything but the login page and CSS needs a login."""
    g.user = None
    name = session.get("user")
    if isinstance(name, str):
        g.user = ctx().users.get(name)
        if g.user is not None and (g.user.disabled or session.get("generation") != g.user.session_generation):
            g.user = None  # the session was ended (logout elsewhere, password or role change, disabled)
        if g.user is None:
            session.clear()
    if g.user is None and request.endpoint not in PUBLIC_ENDPOINTS:
        if (
            request.method == "GET"
            and request.blueprint == "admin"
            and not request.path.endswith(("/thumbnail", ".xlsx"))
        ):
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        abort(401)
    return None


def require(role: str) -> Callable[[F], F]:
    """Let only users whose role allows ``role`` in (403 for the others)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                abort(401)
            if not role_allows(user.role, role):
                abort(403)
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def needs_https() -> bool:
    """Whether the browser will drop our Secure cookies: plain HTTP with ``admin.secure_cookies`` on
    (browsers make an exception for localhost only)."""
    host = (request.host or "").rsplit(":", 1)[0].strip("[]")
    local = host in ("localhost", "127.0.0.1", "::1")
    return bool(ctx().settings.admin.secure_cookies) and not request.is_secure and not local


def _safe_next(target: str | None) -> str:
    """Follow only a same-site relative path. Browsers and Werkzeug drop tabs and newlines and treat
    backslashes as slashes, so anything holding those (or any control character) is refused outright."""
    if target and target.isprintable() and not any(c.isspace() or c == "\\" for c in target):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") and not target.startswith("//"):
            return target
    return url_for("admin.search")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""), needs_https=needs_https())
    username = request.form.get("username", "").strip()[:64]
    password = request.form.get("password", "")
    attempt = Attempt.of(username, request.remote_addr or "?")
    throttle = ctx().logins
    wait = throttle.blocked_for(attempt)
    if wait > 0:
        current_app.logger.warning("login rate limit hit for %s", attempt.client)
        minutes = math.ceil(wait / 60)
        error = f"Too many failed attempts. Wait {minutes} minute{'s' if minutes > 1 else ''} and try again."
        return render_template("login.html", error=error, next=""), 429
    user = ctx().users.verify(username, password)
    if user is None:
        throttle.failed(attempt)
        return render_template("login.html", error="Wrong user name or password.", next=""), 401
    throttle.succeeded(attempt)
    session.clear()  # a fresh session on login: no fixation
    session["user"] = user.username
    session["generation"] = user.session_generation
    session.permanent = True
    return redirect(_safe_next(request.form.get("next")))


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    user = current_user()
    if user is not None:
        ctx().users.end_sessions(user.username)  # a copied cookie dies too
    session.clear()
    return redirect(url_for("auth.login"))

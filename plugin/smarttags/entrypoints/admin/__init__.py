"""The admin panel: a Flask adapter over the library. Views parse input, call one library function and
render a Jinja template; nothing in ``smarttags`` outside this package imports Flask.

Security: every page needs a login (users from ``smarttags admin create-user``), roles admin > moderator
> viewer, CSRF tokens on every form (Flask-WTF), HttpOnly/SameSite=Lax session cookies (Secure when
``admin.secure_cookies``), a strict Content-Security-Policy, and login rate limiting with back-off kept in
OpenSearch (``core/logins.py``), so it holds across processes and restarts.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, Response, render_template
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from smarttags.adapters.thumbnails import Thumbnails
from smarttags.core.logins import LoginThrottle
from smarttags.core.users import UserStore
from smarttags.entrypoints.compose import Services
from smarttags.errors import ConfigError, NotFound, RequestError, ServiceError
from smarttags.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class AdminContext:
    """What the views use, built once per app."""

    settings: Settings
    services: Services
    users: UserStore
    logins: LoginThrottle
    thumbnails: Thumbnails


def create_app(
    settings: Settings,
    services: Services | None = None,
    *,
    debug: bool = False,
) -> Flask:
    """Build the admin app. ``settings.admin.secret_key`` is required unless ``debug``."""
    from smarttags.entrypoints.admin import auth, views

    secret = settings.admin.secret_key.get_secret_value() if settings.admin.secret_key else None
    if not secret:
        if not debug:
            raise ConfigError(
                "SMARTTAGS_ADMIN__SECRET_KEY", "the admin needs a secret key to sign sessions (or run it with --debug)"
            )
        secret = secrets.token_hex(32)
    if len(secret) < 16 and not debug:
        raise ConfigError("SMARTTAGS_ADMIN__SECRET_KEY", "use at least 16 random characters")

    services = services or Services(settings)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret,
        SESSION_COOKIE_NAME="smarttags_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.admin.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),
        WTF_CSRF_TIME_LIMIT=8 * 3600,
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    app.debug = debug
    app.extensions["smarttags"] = AdminContext(
        settings=settings,
        services=services,
        users=UserStore(services.index),
        logins=LoginThrottle(services.index, settings.admin.login_attempts_per_minute),
        thumbnails=Thumbnails(
            services.store, services.own_store, settings.aws.thumbnails_prefix, max_pixels=settings.backbone.max_pixels
        ),
    )
    CSRFProtect(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.before_request(auth.load_user)
    app.after_request(_security_headers)
    app.jinja_env.filters["highlight"] = views.highlight
    app.jinja_env.filters["timecode"] = views.timecode
    _error_pages(app)
    return app


def _security_headers(response: Response) -> Response:
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _error_pages(app: Flask) -> None:
    from smarttags.entrypoints.admin import auth

    def page(status: int, title: str, message: str) -> tuple[str, int]:
        return render_template("error.html", status=status, title=title, message=message), status

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> tuple[str, int]:
        if auth.needs_https():
            return page(400, "HTTPS needed", "This panel needs HTTPS, or set admin.secure_cookies=false for local use.")
        return page(400, "Form expired", "The form was missing its security token or it expired. Reload and retry.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if exc.code in (301, 302, 303, 307, 308):
            return exc
        return page(exc.code or 500, exc.name, exc.description or "")

    @app.errorhandler(NotFound)
    def not_found(exc: NotFound) -> tuple[str, int]:
        return page(404, "Not found", str(exc))

    @app.errorhandler(RequestError)
    def bad_request(exc: RequestError) -> tuple[str, int]:
        return page(400, "Not possible", str(exc))

    @app.errorhandler(ServiceError)
    def service_error(exc: ServiceError) -> tuple[str, int]:
        log.warning("service error on an admin page: %s", exc)
        return page(503, "A service is unavailable", str(exc))

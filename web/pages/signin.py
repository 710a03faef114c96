"""Signing in to the dashboard with an API key, and out again (web.session_auth keeps the session). A key that
is refused counts against the client's address as a refused API key does (web.auth), and an address past
DCGAN_FAILED_AUTH_PER_MINUTE is answered 429 before its key is looked at."""

from __future__ import annotations

from flask import current_app, redirect, render_template, request, url_for

from .. import session_auth
from ..problems import Problem
from . import bp


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (`//host` or a URL would be an open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("pages.jobs")


@bp.get("/signin")
def signin():
    return render_template("signin.html", next=_safe_next(request.args.get("next")), error=None)


@bp.post("/signin")
def signin_post():
    target = _safe_next(request.form.get("next"))
    failures = current_app.extensions["dcgan"]["failed_auth"]
    try:
        failures.check(request.remote_addr)
    except Problem as throttled:
        return render_template("signin.html", next=target, error=throttled.detail), 429, throttled.headers
    if not session_auth.sign_in(request.form.get("api_key", "")):
        failures.count(request.remote_addr)
        return render_template("signin.html", next=target,
                               error="That API key is unknown or revoked."), 401
    return redirect(target, code=303)


@bp.post("/signout")
def signout():
    session_auth.sign_out()
    return redirect(url_for("pages.signin"), code=303)

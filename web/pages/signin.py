"""Signing in to the dashboard with an API key, and out again (web.session_auth keeps the session)."""

from __future__ import annotations

from flask import redirect, render_template, request, url_for

from .. import session_auth
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
    if not session_auth.sign_in(request.form.get("api_key", "")):
        return render_template("signin.html", next=target,
                               error="That API key is unknown or revoked."), 401
    return redirect(target, code=303)


@bp.post("/signout")
def signout():
    session_auth.sign_out()
    return redirect(url_for("pages.signin"), code=303)

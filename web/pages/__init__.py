"""The dashboard: server-rendered pages under `/` for people who watch their jobs in a browser.

This package owns the `pages` blueprint and what every page shares: the sign-in gate (a page answers only
a signed-in session, web.session_auth, and sets the session's tenant, so every read is scoped to it), the
CSRF check on every form that changes something (Flask-WTF; a POST without the token is a 400 page), the
HTML error pages, and the security headers of every response (`install`). The pages read and change data
only through the /v1 API (web.pages.api); their scripts (web/static/*.js) read the same API from the
browser, with the session cookie. Templates live in web/templates/, scripts and vendored libraries in
web/static/ (see web/static/vendor/README.md); there is no build step and no inline script: the
Content-Security-Policy forbids them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from flask import Blueprint, Flask, Response, g, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException

from core.gan.seeds import SampleError, SeedRanges
from core.settings import Settings

from .. import session_auth
from ..problems import Problem

bp = Blueprint("pages", __name__)
csrf = CSRFProtect()
# Pages a visitor without a session may open.
OPEN_PAGES = frozenset({"pages.signin", "pages.signin_post"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def install(app: Flask, settings: Settings) -> None:
    session_auth.install(app, settings)
    # The check runs where it applies (`_gate` for pages, web.auth for cookie-authenticated /v1 requests),
    # not on every route: a Bearer client of /v1 has no token to send, and needs none.
    app.config.update(WTF_CSRF_CHECK_DEFAULT=False, WTF_CSRF_TIME_LIMIT=None)
    csrf.init_app(app)
    content_security_policy = _content_security_policy(settings)

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", content_security_policy)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    app.jinja_env.filters.update(duration=duration, when=when, short_id=short_id, size=size, seed_ranges=seed_ranges)
    app.register_blueprint(bp)


def _content_security_policy(settings: Settings) -> str:
    """Scripts, styles and connections from this origin only: no inline script or handler can run, and no
    other site may frame a page. Images may also be blob: URLs (the upload's previews, made in the browser)
    and, with S3 storage, come from the store, where the API redirects sample grids to presigned URLs."""
    images = ["'self'", "blob:", "data:"]
    if urlparse(settings.storage_url).scheme == "s3":
        endpoint = settings.s3_public_endpoint_url or settings.s3_endpoint_url
        images.append(_origin(endpoint) if endpoint else "https://*.amazonaws.com")
    return ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            f"img-src {' '.join(images)}; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


def _origin(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}"


@bp.before_request
def _gate():
    if request.method in UNSAFE_METHODS:
        csrf.protect()  # CSRFError (a 400) when the form's token is missing or wrong
    if request.endpoint in OPEN_PAGES:
        return None
    tenant = session_auth.session_tenant()
    if tenant is None:
        wanted = request.full_path.rstrip("?") if request.method == "GET" else None
        return redirect(url_for("pages.signin", next=wanted))
    g.tenant_id = tenant
    g.signed_in = True
    return None


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return _error_page(exc.code or 500, exc.description or exc.name)


@bp.errorhandler(Problem)
def _problem(problem: Problem):
    return _error_page(problem.status, problem.detail)


def _error_page(status: int, detail: str):
    titles = {400: "Bad request", 403: "Forbidden", 404: "Not found", 405: "Method not allowed"}
    return render_template("error.html", status=status, title=titles.get(status, "Error"), detail=detail), status


# ----- Jinja filters: the same formatting web/static/dashboard.js applies to live updates -----

def duration(seconds: Any) -> str:
    """`1h 02m`, `3m 05s`, `42s`; an empty string for anything else (None, a progress not reported yet)."""
    if not isinstance(seconds, (int, float)):
        return ""
    seconds = max(0, int(round(float(seconds))))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


def when(iso: Any) -> str:
    """An ISO time as `2026-12-01 14:00:05 UTC` (the API's times are UTC)."""
    if not iso or not isinstance(iso, str):
        return ""
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S UTC")


def seed_ranges(stored: Any) -> SeedRanges | None:
    """A generate job's stored seeds (a ranges string like "0-99,200", or an older job's list) as ranges, to
    show their count without expanding them; None for anything else."""
    try:
        return SeedRanges.parse(stored, limit=None)
    except (SampleError, TypeError):
        return None


def short_id(value: str | None) -> str:
    return (value or "")[:8]


def size(num_bytes: Any) -> str:
    if not isinstance(num_bytes, int):
        return ""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""


from . import datasets, generators, jobs, new_job, signin  # noqa: E402,F401  (their routes join bp)

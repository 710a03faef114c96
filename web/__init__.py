"""The Flask API and the dashboard's pages: `create_app(settings=None)` is its only entry point (it reads the
environment when no settings are given). It never imports torch or the worker: jobs are sent to Celery by
task name. The API's routes are under /v1 (BLUEPRINTS, documented by web.openapi); the pages under / are
web.pages, which also sets the secret key, the CSRF protection and the security headers.
"""

from __future__ import annotations

from flask import Flask

from core.webhooks import configure as configure_webhooks
from core.settings import Settings

from .artifacts import bp as artifacts_bp
from .auth import install as install_auth
from .datasets import bp as datasets_bp
from .deletion import bp as deletion_bp
from .generators import bp as generators_bp
from .health import bp as health_bp
from .jobs import bp as jobs_bp
from .metrics import install as install_metrics
from .pages import install as install_pages
from .problems import register_error_handlers
from .resources import attach, readiness_checks
from .sampling import bp as sampling_bp
from .stream import bp as stream_bp
from .stream import install as install_streams
from .usage import bp as usage_bp
from .validation import limit_json_bodies
from .webhooks import bp as webhooks_bp

# Every route the API serves; web.openapi documents exactly these.
BLUEPRINTS = (health_bp, jobs_bp, stream_bp, artifacts_bp, datasets_bp, generators_bp, sampling_bp, webhooks_bp,
              deletion_bp, usage_bp)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    # The outbox writer (core.webhooks) runs inside core.jobs' transitions, where no settings are passed.
    configure_webhooks(settings.webhook_progress_seconds)
    # Bodies above the limit are refused with 413 from the Content-Length header, before reading them.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    register_error_handlers(app)
    app.before_request(limit_json_bodies)
    attach(app, settings)
    install_auth(app, settings)
    install_metrics(app, settings)  # GET /metrics (outside /v1 and the OpenAPI document); times every request
    install_streams(app)
    app.config["READINESS_CHECKS"] = readiness_checks(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    install_pages(app, settings)
    return app

"""The Flask API: `create_app(settings=None)` is its only entry point (it reads the environment when no
settings are given). It never imports torch or the worker: jobs are sent to Celery by task name.
"""

from __future__ import annotations

from flask import Flask

from core.settings import Settings

from .artifacts import bp as artifacts_bp
from .auth import install as install_auth
from .datasets import bp as datasets_bp
from .generators import bp as generators_bp
from .health import bp as health_bp
from .jobs import bp as jobs_bp
from .resources import attach, readiness_checks
from .problems import register_error_handlers


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    # Bodies above the limit are refused with 413 from the Content-Length header, before reading them.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    register_error_handlers(app)
    attach(app, settings)
    install_auth(app, settings)
    app.config["READINESS_CHECKS"] = readiness_checks(app)
    app.register_blueprint(health_bp)
    app.register_blueprint(jobs_bp)
    app.register_blueprint(artifacts_bp)
    app.register_blueprint(datasets_bp)
    app.register_blueprint(generators_bp)
    return app

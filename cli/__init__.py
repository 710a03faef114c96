"""`dcgan`: the project's command-line programs, applications built on `core` (never imported by it).

- `cli.main`: the parser and the dispatch; the one place the command line reads the environment
  (`DCGAN_THREADS`, `DCGAN_CACHE_DIR`) and turns expected failures into one line on stderr and exit 2.
- `cli.engine`: train, sample and eval on this machine (the torch side).
- `cli.servers`: up, api (gunicorn), worker and reaper (Celery); servers are started by import string
  (`web:create_app()`, `worker.celery_app`), so this package imports neither `web` nor `worker`.
- `cli.admin`: db upgrade and keys.
- `cli.client`: `dcgan jobs` and `dcgan datasets`, a small client of the REST API: parser, dispatch, requests.
- `cli.follow`: following a job's event stream as a progress bar (`dcgan jobs follow`, `--follow`).
- `cli.downloads`: `dcgan jobs download` (atomic writes, sha256 checks, redirects without the key).
- `cli.datasets`: `dcgan datasets upload|list` (a streamed multipart upload).
"""

"""The Celery side of the platform: the app (`worker.celery_app`) and its thin tasks (`worker.tasks`)."""

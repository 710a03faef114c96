"""An S3-compatible server for every test tree: moto's standalone server over HTTP on a free loopback port.

moto stands in for MinIO (docker-compose's S3), which needs a Docker engine this machine does not have;
boto3 talks real HTTP to it.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3 server on a free local port, with dummy credentials in the environment while it runs."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        # Keep a developer's ~/.aws out of the test.
        env.setenv("AWS_CONFIG_FILE", os.devnull)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
        server.stop()

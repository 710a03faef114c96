"""The CLI tests' stand-in for the API (tests/cli/fake_api.py), started per test."""

from __future__ import annotations

import pytest

from tests.cli.fake_api import FakeApi


@pytest.fixture
def fake_apis(monkeypatch):
    """`make(...)` starts a FakeApi and points the CLI's environment at it; all are closed at the end."""
    apis = []

    def make(*args, **kwargs) -> FakeApi:
        apis.append(FakeApi(*args, **kwargs))
        for name, value in apis[-1].env().items():
            monkeypatch.setenv(name, value)
        return apis[-1]

    yield make
    for fake in apis:
        fake.close()

"""Priority and queue position over the API (core.scheduling): a submission's priority is kept and shown, a
queued job shows its place in its queue, and a priority out of range is a 422 naming the field."""

from __future__ import annotations

import pytest

from tests.web.conftest import authorized_client

TINY = {"img_size": 32, "img_channels": 1, "z_dim": 8, "g_channels": 8, "d_channels": 8, "batch_size": 16,
        "steps": 5}


def submit(client, **extra) -> dict:
    response = client.post("/v1/jobs/train", json={"dataset": "builtin:digits", "config": TINY, **extra})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def test_queued_jobs_show_their_priority_and_place_across_tenants(api, api_app):
    first = submit(api)
    low = submit(api, priority=0)
    urgent = submit(authorized_client(api_app, "another-tenant"), priority=9)
    assert (first["priority"], low["priority"], urgent["priority"]) == (5, 0, 9)
    assert urgent["queue_position"] == 1  # the queue is shared: another tenant's job counts
    positions = {job["id"]: api.get(f"/v1/jobs/{job['id']}").get_json()["queue_position"] for job in (first, low)}
    assert positions == {first["id"]: 2, low["id"]: 3}
    cancelled = api.post(f"/v1/jobs/{first['id']}/cancel").get_json()
    assert cancelled["status"] == "cancelled" and cancelled["queue_position"] is None
    assert api.get(f"/v1/jobs/{low['id']}").get_json()["queue_position"] == 2


@pytest.mark.parametrize("priority", [-1, 10, 2.5, "high", True])
def test_a_priority_out_of_range_is_422_naming_it(api, priority):
    response = api.post("/v1/jobs/train", json={"dataset": "builtin:digits", "config": TINY, "priority": priority})
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    assert [error["field"] for error in response.get_json()["errors"]] == ["priority"]

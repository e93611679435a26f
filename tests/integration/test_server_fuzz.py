"""Random request bodies against a live server: whatever a client sends, the answer is never a 500."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optascan.server.service import ServerSettings
from optascan.testing.live_server import LiveServer

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=8)
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(st.text(max_size=20), json_values)}),
    st.fixed_dictionaries({"type": st.just("image_url"),
                           "image_url": st.one_of(json_values, st.fixed_dictionaries(
                               {"url": st.one_of(st.just("data:image/png;base64,AAAA"), st.text(max_size=20),
                                                 json_values)}))}),
    json_values)
messages = st.lists(st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
                           "content": st.one_of(st.text(max_size=20), st.lists(parts, max_size=3), json_values)}),
    json_values), max_size=3)
fields = {
    "model": st.one_of(st.just("demo"), json_values), "messages": messages,
    "max_tokens": st.one_of(st.integers(-5, 8), json_values), "temperature": st.one_of(st.floats(-2, 3), json_values),
    "top_p": json_values, "seed": json_values, "stop": json_values, "n": json_values, "stream": st.booleans(),
    "response_format": st.one_of(json_values, st.fixed_dictionaries({"type": st.sampled_from(
        ["json_schema", "json_object", "text", "x"]), "json_schema": json_values})),
    "top_k": json_values, "ignore_eos": json_values, "stream_options": json_values,
}
bodies = st.fixed_dictionaries({}, optional=fields)


@pytest.fixture(scope="module")
def server():
    with LiveServer(ServerSettings(models=["demo"])) as live:
        yield live


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(bodies, json_values))
def test_no_request_body_gives_a_server_error(server, body):
    # NaN and Infinity go over the wire as Python's json writes them: the server must cope with those too
    response = httpx.post(server.url + "/v1/chat/completions", content=json.dumps(body), timeout=60,
                          headers={"Content-Type": "application/json"})
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        assert response.json()["error"]["message"]


flow_bodies = st.fixed_dictionaries({}, optional={
    "goal": st.one_of(st.text(max_size=12), json_values), "images": st.one_of(st.lists(st.text(max_size=12),
                                                                                      max_size=2), json_values),
    "depth": st.one_of(st.sampled_from(["quick", "balanced", "x"]), json_values), "model": json_values,
    "seed": json_values})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(flow_bodies, json_values))
def test_no_flow_body_gives_a_server_error(server, body):
    with httpx.stream("POST", server.url + "/api/flow/analyze", content=json.dumps(body), timeout=60,
                      headers={"Content-Type": "application/json"}) as response:
        assert response.status_code < 500, body
        if response.status_code == 200:  # it runs: the stream ends with the analysis or a typed error event
            last = [line for line in response.iter_lines() if line.startswith("data: ")][-1]
            assert json.loads(last[6:])["type"] in ("analysis", "error")
            if json.loads(last[6:])["type"] == "error":
                assert json.loads(last[6:])["error"]["code"] != "internal_error", (body, last)

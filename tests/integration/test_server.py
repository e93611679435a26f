"""The server as clients meet it: a live uvicorn on 127.0.0.1, the official openai client, plain HTTP."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from optascan.server.service import ServerSettings
from optascan.testing.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[2]
SHAPES = "data:image/jpeg;base64," + base64.b64encode((ROOT / "examples/shapes.jpg").read_bytes()).decode()


def ask(text: str, url: str = SHAPES) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def server(tiny_dir):
    settings = ServerSettings(models=["demo", str(tiny_dir("llama_text"))], max_queue=2)
    with LiveServer(settings) as live:
        live.long_model = str(tiny_dir("llama_text"))
        yield live


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def metric(server, name: str, **labels) -> float:
    text = httpx.get(server.url + "/metrics").text
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def wait_until(condition, timeout=30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_openai_client_gets_the_demo_models_right_answers(client):
    assert [m.id for m in client.models.list()][0] == "demo"
    for question, expected in [("How many red circles are there?", "2"), ("What colour is the star?", "yellow"),
                               ("Where is the blue square?", "right")]:
        reply = client.chat.completions.create(model="demo", messages=ask(question), temperature=0)
        assert reply.choices[0].message.content == expected
        assert reply.choices[0].finish_reason == "stop" and reply.usage.prompt_tokens > 9


def test_openai_client_streams_with_usage(client):
    stream = client.chat.completions.create(model="demo", messages=ask("What shapes do you see?"), temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "circle, square, triangle, star"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 3


def test_json_schema_response_format_is_constrained(client, server):
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 12}},
              "required": ["answer"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model=server.long_model, messages=[{"role": "user", "content": "anything"}], temperature=1.0, seed=3,
        max_tokens=400, response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    assert set(json.loads(reply.choices[0].message.content)) == {"answer"}


def test_a_client_that_leaves_mid_stream_cancels_its_generation(client, server):
    before = metric(server, "optascan_requests_total", outcome="cancelled")
    stream = client.chat.completions.create(model=server.long_model, messages=[{"role": "user", "content": "go"}],
                                            max_tokens=100_000, stream=True, extra_body={"ignore_eos": True})
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    wait_until(lambda: metric(server, "optascan_requests_total", outcome="cancelled") == before + 1)
    assert httpx.get(server.url + "/api/status").json()["running"] == []
    start = time.monotonic()
    client.chat.completions.create(model=server.long_model, messages=[{"role": "user", "content": "hi"}],
                                   max_tokens=4)
    assert time.monotonic() - start < 10  # served at once, not after the abandoned 100,000 tokens


def test_a_full_queue_answers_429_with_retry_after(server):
    body = {"model": server.long_model, "messages": [{"role": "user", "content": "go"}], "max_tokens": 100_000,
            "stream": True, "ignore_eos": True}
    ids, streams = [], []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for _ in range(3):  # one running, two waiting (max_queue=2)
            response = http.send(http.build_request("POST", "/v1/chat/completions", json=body), stream=True)
            assert response.status_code == 200
            ids.append(response.headers["x-generation-id"])
            streams.append(response)
        refused = http.post("/v1/chat/completions", json=body)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "queue_full"
        for generation_id in ids:
            assert http.post(f"/api/generations/{generation_id}/cancel").status_code == 200
        for response in streams:
            lines = [line for line in response.iter_lines() if line]
            assert lines[-1] == "data: [DONE]"
            response.close()
        assert http.post(f"/api/generations/{ids[0]}/cancel").status_code == 400  # finished: nothing to cancel


@pytest.mark.parametrize("body, status, code", [
    ({"model": "demo", "messages": []}, 422, "invalid_body"),
    ({"model": "demo", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "invalid_request_error"),
    ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "model_not_found"),
    ({"model": "demo", "messages": ask("x", "file:///etc/passwd")}, 400, "invalid_request_error"),
    ({"model": "demo", "messages": ask("x", "/etc/passwd")}, 400, "invalid_request_error"),
    ({"model": "demo", "messages": ask("x", "http://169.254.169.254/latest/meta-data")}, 400,
     "invalid_request_error"),
    ({"model": "demo", "messages": ask("x", "data:image/png;base64,bm90IGFuIGltYWdl")}, 400, "invalid_image"),
    ({"model": "demo", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400,
     "invalid_request_error"),
])
def test_client_mistakes_get_openai_shaped_errors_and_the_server_keeps_serving(server, client, body, status, code):
    response = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert client.chat.completions.create(model="demo", messages=ask("What colour is the star?"),
                                          temperature=0).choices[0].message.content == "yellow"


def test_body_cap_and_malformed_json(server):
    huge = httpx.post(server.url + "/v1/chat/completions", content=b"x" * (33 * 2**20),
                      headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
    broken = httpx.post(server.url + "/v1/chat/completions", content=b"{not json",
                        headers={"Content-Type": "application/json"})
    assert broken.status_code == 422


def test_host_header_must_name_this_machine(server):
    for host in ("evil.example", "127.0.0.1.nip.io", "attacker.com:11435"):
        response = httpx.get(server.url + "/v1/models", headers={"Host": host})
        assert response.status_code == 400 and response.json()["error"]["code"] == "host_not_allowed"
    for host in ("localhost", f"127.0.0.1:{server.settings.port}", "[::1]:80"):
        assert httpx.get(server.url + "/v1/models", headers={"Host": host}).status_code == 200


def test_api_key_guards_every_route_but_health(tiny_dir):
    settings = ServerSettings(models=[str(tiny_dir("llama_text"))], api_key="s3cret")
    with LiveServer(settings) as live:
        routes = {(method.upper(), path) for path, item in live.app.openapi()["paths"].items() for method in item}
        routes |= {("GET", "/"), ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/static/index.html")}
        assert len(routes) >= 16
        for method, path in sorted(routes):
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            response = httpx.request(method, live.url + concrete)
            page_file = method == "GET" and (path == "/" or path.startswith("/static/"))
            expected = 200 if path == "/health" or page_file else 401  # the page's files hold no data
            assert response.status_code == expected, (method, path, response.status_code)
        ok = httpx.get(live.url + "/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.get(live.url + "/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert httpx.get(live.url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        key_client = openai.OpenAI(base_url=live.url + "/v1", api_key="s3cret", max_retries=0)
        assert key_client.chat.completions.create(model=settings.models[0], messages=[{"role": "user",
                                                  "content": "hi"}], max_tokens=2).usage.completion_tokens >= 1


def test_cors_is_off_unless_origins_are_listed(server, tiny_dir):
    preflight = {"Origin": "https://site.example", "Access-Control-Request-Method": "POST"}
    closed = httpx.options(server.url + "/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    settings = ServerSettings(models=[str(tiny_dir("llama_text"))], cors_origins=["https://site.example"])
    with LiveServer(settings) as live:
        opened = httpx.options(live.url + "/v1/chat/completions", headers=preflight)
        assert opened.headers["access-control-allow-origin"] == "https://site.example"
        other = httpx.options(live.url + "/v1/chat/completions", headers={**preflight, "Origin": "https://x.example"})
        assert other.headers.get("access-control-allow-origin") != "https://x.example"


def test_image_urls_when_enabled_still_refuse_private_addresses(tiny_dir, monkeypatch):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import optascan.images.fetch as fetch

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()

        def log_message(self, *args):
            pass

    redirector = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    settings = ServerSettings(models=["demo"], allow_image_urls=True)
    try:
        with LiveServer(settings) as live:
            for url in (live.url + "/health", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/a.png",
                        "http://[::1]/a.png"):
                response = httpx.post(live.url + "/v1/chat/completions",
                                      json={"model": "demo", "messages": ask("x", url)})
                assert response.status_code == 400, (url, response.text)
                assert response.json()["error"]["code"] == "invalid_image"
            # a "public" first hop (our redirector, let through once) that redirects to the metadata address
            real_vet, hops = fetch._vetted_address, iter([True])
            monkeypatch.setattr(fetch, "_vetted_address", lambda host, port, allow: real_vet(host, port,
                                                                                            next(hops, False)))
            redirect_url = f"http://127.0.0.1:{redirector.server_address[1]}/a.png"
            response = httpx.post(live.url + "/v1/chat/completions",
                                  json={"model": "demo", "messages": ask("x", redirect_url)})
            assert response.status_code == 400 and "169.254.169.254" in response.json()["error"]["message"]
    finally:
        redirector.shutdown()


def sse(response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def test_the_flow_over_http_analyze_then_answer_into_history(tiny_dir):
    # keep-alive 0: the model is unloaded after each turn, so the answer runs on a freshly loaded engine
    settings = ServerSettings(models=[str(tiny_dir("llava"))], keep_alive_s=0)
    with LiveServer(settings) as live, httpx.Client(base_url=live.url, timeout=120) as http:
        with http.stream("POST", "/api/flow/analyze", json={"goal": "cheapest item", "images": [SHAPES],
                                                            "depth": "quick", "seed": 1}) as response:
            events = sse(response)
        assert any(e["type"] == "progress" and e["tokens"] > 0 for e in events)
        analysis = events[-1]
        assert analysis["type"] == "analysis" and isinstance(analysis["questions"], list)
        answers = {q["id"]: q.get("default") for q in analysis["questions"] if q.get("default") is not None}
        with http.stream("POST", f"/api/flow/{analysis['session_id']}/answer", json={"answers": answers}) as response:
            final = sse(response)[-1]
        assert final["type"] == "answer" and final["markdown"].startswith("## ")
        assert final["history_id"]
        assert http.get("/api/status").json()["loaded"] == []  # unloaded between and after the turns
        again = http.post(f"/api/flow/{analysis['session_id']}/answer", json={"answers": {}})
        assert again.status_code == 400  # a finished session is gone, with its images
        missing = http.post("/api/flow/nope/answer", json={"answers": {}})
        assert missing.status_code == 400


def test_status_lists_loaded_models_and_unload_frees_them(server, client):
    client.chat.completions.create(model="demo", messages=ask("What colour is the star?"), temperature=0)
    status = httpx.get(server.url + "/api/status").json()
    assert any(m["name"] == "demo" and m["bytes"] > 0 for m in status["loaded"])
    assert [m["engine"] for m in status["loaded"] if m["name"] == "demo"] == ["hf"]  # auto, on this CPU
    assert all("auto: transformers" in m["engine_choice"] for m in status["loaded"] if m["name"] == "demo")
    assert status["devices"][0]["device"] == "cpu"
    assert httpx.post(server.url + "/api/models/demo/unload").json() == {"unloaded": True}
    assert all(m["name"] != "demo" for m in httpx.get(server.url + "/api/status").json()["loaded"])


def test_pull_streams_progress_from_a_hub(tiny_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from optascan.testing.hub_server import HubServer

    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    with HubServer({"tiny-org/tiny-llava": tiny_dir("llava")}) as hub:
        hub.patch_client(monkeypatch)
        with LiveServer(ServerSettings(models=["demo"])) as live, httpx.Client(base_url=live.url, timeout=120) as http:
            with http.stream("POST", "/api/pull", json={"model": "tiny-org/tiny-llava"}) as response:
                events = sse(response)
            progress = [e for e in events if e["type"] == "progress"]
            assert progress and progress[-1]["fraction"] == 1.0
            assert events[-1]["type"] == "done" and not events[-1]["cancelled"]
            served = [m["id"] for m in http.get("/v1/models").json()["data"]]
            assert "tiny-org/tiny-llava" in served, (served, events[-1])
            deleted = http.delete("/api/models/tiny-org/tiny-llava")
            assert deleted.status_code == 200 and not any(cache.glob("models--tiny-org--tiny-llava"))
            with http.stream("POST", "/api/pull", json={"model": "tiny-org/absent"}) as response:
                failed = sse(response)[-1]
            assert failed["type"] == "error" and failed["error"]["code"] == "model_not_found"


def test_concurrent_clients_all_get_answers(server, client):
    answers, errors = [], []

    def one():
        try:
            answers.append(client.chat.completions.create(model="demo", messages=ask("What colour is the star?"),
                                                          temperature=0).choices[0].message.content)
        except openai.RateLimitError as err:  # max_queue=2 here: some may be told to retry
            errors.append(err)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers and set(answers) == {"yellow"} and len(answers) + len(errors) == 6


def test_sigterm_stops_accepting_ends_in_flight_work_and_exits(tiny_dir):
    import os
    import signal
    import subprocess
    import sys

    from optascan.testing.live_server import free_port

    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "optascan", "serve", "--model", str(tiny_dir("llama_text")),
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), timeout=60)
        body = {"messages": [{"role": "user", "content": "go"}], "max_tokens": 100_000, "stream": True,
                "ignore_eos": True}
        with httpx.Client(base_url=url, timeout=60) as http:
            with http.stream("POST", "/v1/chat/completions", json=body) as response:
                lines = response.iter_lines()
                next(lines)
                started = time.monotonic()
                process.send_signal(signal.SIGTERM)
                rest = list(lines)  # the generation is cancelled: the stream ends properly, at once
        # uvicorn re-raises the signal once it has shut down cleanly, so the exit status says "terminated"
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 30
        log = process.stdout.read().decode()
        assert "Waiting for application shutdown" in log and "Application shutdown complete" in log, log
        assert [line for line in rest if line][-1] == "data: [DONE]" and len(rest) < 100_000
        assert time.monotonic() - started < 8  # not the 10 s graceful timeout: cancelled, not cut
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_cross_site_posts_are_refused_and_same_site_ones_pass(server):
    foreign = httpx.post(server.url + "/api/models/demo/unload", headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "cross_site_refused"
    own = httpx.post(server.url + "/api/models/demo/unload", headers={"Origin": server.url})
    assert own.status_code == 200


def test_chunked_body_over_the_cap_unknown_routes_and_bad_extras_get_openai_shaped_errors(server):
    def chunks():
        for _ in range(40):
            yield b"x" * 2**20

    huge = httpx.post(server.url + "/v1/chat/completions", content=chunks(),
                      headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
    missing = httpx.get(server.url + "/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = httpx.put(server.url + "/v1/chat/completions", json={})
    assert wrong.status_code == 405 and "error" in wrong.json()
    for extra in ({"top_k": "abc"}, {"repetition_penalty": "x"}, {"ignore_eos": "maybe"}):
        bad = httpx.post(server.url + "/v1/chat/completions",
                         json={"model": "demo", "messages": [{"role": "user", "content": "hi"}], **extra})
        assert bad.status_code == 422, (extra, bad.text)


def test_a_stream_that_fails_before_its_first_token_is_a_plain_http_error(server):
    body = {"model": "demo", "stream": True, "messages": ask("x", "data:image/png;base64,bm90IGFuIGltYWdl")}
    response = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_image"


def test_models_retrieve(client):
    assert client.models.retrieve("demo").id == "demo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_a_non_streaming_client_that_hangs_up_cancels_its_generation(server):
    before = metric(server, "optascan_requests_total", outcome="cancelled")
    body = {"model": server.long_model, "messages": [{"role": "user", "content": "go"}], "max_tokens": 100_000,
            "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=body, timeout=1.5)
    wait_until(lambda: metric(server, "optascan_requests_total", outcome="cancelled") == before + 1)
    assert httpx.get(server.url + "/api/status").json()["running"] == []


def test_flow_streams_can_be_cancelled_through_the_api():
    from optascan import Engine
    from optascan.server.service import Service
    from optascan.testing.scripted import ScriptedBackend, byte_tokens

    backend = ScriptedBackend(*byte_tokens("word " * 2000), step=lambda i: time.sleep(0.02))
    settings = ServerSettings(models=["slow"])
    with LiveServer(settings, Service(settings, load=lambda name: Engine(backend, name=name))) as live, \
            httpx.Client(base_url=live.url, timeout=60) as http:
        with http.stream("POST", "/api/flow/analyze", json={"goal": "anything", "depth": "thorough"}) as response:
            stream_id = response.headers["x-stream-id"]
            events = []
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    if len(events) == 3:
                        assert http.post(f"/api/generations/{stream_id}/cancel").status_code == 200
        assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "cancelled"
        assert backend.steps_run < 500
        assert http.get("/api/status").json()["running"] == []


def test_pull_refuses_bad_names_before_streaming(server):
    for name, status in (("../../etc", 400), ("a b", 400), ("demo", 404)):
        response = httpx.post(server.url + "/api/pull", json={"model": name})
        assert response.status_code == status, (name, response.text)

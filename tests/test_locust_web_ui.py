"""The harness in Locust's web UI: its fields' labels, and an invalid value typed into
the start form, which must stop the run with the reason shown in the UI."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from locust_runs import LOCUSTFILE, ROOT, RUN_TIMEOUT, free_port

HTTP_TIMEOUT = 10.0


@pytest.fixture
def web_ui(tmp_path, server):
    """``locust`` with its web UI on a free port, against the real server; its base URL."""
    port = free_port()
    log = (tmp_path / "locust.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE),
            "--web-host", "127.0.0.1", "--web-port", str(port),
            "--host", f"tcp://127.0.0.1:{server.port}",
        ],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            try:
                get(base + "/")
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "locust.log").read_text()
                assert time.monotonic() < deadline, "the web UI did not start"
                time.sleep(0.2)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        log.close()


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
        return response.read().decode()


def post(url: str, form: dict) -> str:
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(url, data=data, timeout=HTTP_TIMEOUT) as response:
        return response.read().decode()


def test_the_options_labels_are_plain_sentences(web_ui):
    page = get(web_ui + "/")
    assert "Lines each user sends on a connection before DESCONEXION" in page
    assert "Lines each user keeps in flight on its connection" in page
    assert "%(default)s" not in page and "(default:" not in page


def test_the_tls_options_are_in_the_form(web_ui):
    page = get(web_ui + "/")
    for dest in ("tls_cafile", "tls_insecure", "tls_client_cert", "tls_client_key"):
        assert f'"{dest}"' in page, dest
    assert "With TLS, trust the CA certificate(s) in this PEM file" in page


def test_an_invalid_value_typed_in_the_form_stops_the_run_and_says_why(web_ui, server):
    post(
        web_ui + "/swarm",
        {"user_count": 2, "spawn_rate": 2, "host": f"tcp://127.0.0.1:{server.port}",
         "message_size": "-3"},
    )  # fmt: skip
    deadline = time.monotonic() + RUN_TIMEOUT
    while (report := json.loads(get(web_ui + "/stats/requests")))["state"] != "stopped":
        assert time.monotonic() < deadline, report
        time.sleep(0.2)
    reason = "--message-size must be >= 0, not -3"
    # In the UI's Failures tab, as a failure of the run...
    assert [(error["name"], error["error"]) for error in report["errors"]] == [
        ("options", f"InvalidOption('{reason}')")
    ], report
    # ... and in its Logs tab; not a single request was sent.
    assert any(reason in line for line in json.loads(get(web_ui + "/logs"))["master"])
    assert {entry["name"] for entry in report["stats"]} <= {"options", "Aggregated"}, report


def test_an_unusable_tls_file_typed_in_the_form_is_a_connect_failure_saying_why(
    web_ui, tmp_path
):
    missing = str(tmp_path / "missing-ca.pem")
    post(
        web_ui + "/swarm",
        {"user_count": 1, "spawn_rate": 1, "host": "tls://127.0.0.1:1", "tls_cafile": missing},
    )  # fmt: skip
    deadline = time.monotonic() + RUN_TIMEOUT
    while not (report := json.loads(get(web_ui + "/stats/requests")))["errors"]:
        assert time.monotonic() < deadline, report
        time.sleep(0.2)
    post(web_ui + "/stop", {})
    [error] = {(e["name"], e["error"]) for e in report["errors"]}
    assert error[0] == "connect" and "missing-ca.pem" in error[1], report

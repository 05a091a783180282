"""The Locust harness over TLS: ``--host tls://HOST:PORT``, the ``--tls-*`` options, a
user class's own ``ssl_context_factory``, and handshake failures as ``connect`` failures."""

import os

import pytest
from locust_runs import ROOT, assert_no_crash, run_locust
from servers import ServerProcess


@pytest.fixture(scope="module")
def tls_server(certificates):
    with ServerProcess("--log-level", "warning", *certificates.server_args()) as running:
        yield running


def test_a_short_run_over_tls_with_the_test_ca_nothing_fails(tls_server, certificates):
    run = run_locust(
        f"tls://127.0.0.1:{tls_server.port}", "--tls-cafile", str(certificates.ca), users=4
    )
    assert run.returncode == 0, run
    for name in ("connect", "upper", "DESCONEXION"):
        assert run.requests(name) > 0, run
    assert run.failed("Aggregated") == 0, run


def test_an_unverified_server_is_a_connect_failure_with_its_reason(tls_server):
    run = run_locust(f"tls://127.0.0.1:{tls_server.port}", run_time="2s", users=2)
    assert_no_crash(run)
    assert run.returncode == 1, run
    assert run.failed("connect") == run.requests("connect") > 0, run
    assert any("could not be verified" in error for error in run.errors("connect")), run


def test_tls_to_a_plaintext_server_is_a_connect_failure(server):
    run = run_locust(f"tls://127.0.0.1:{server.port}", "--tls-insecure", run_time="2s", users=2)
    assert_no_crash(run)
    assert run.failed("connect") == run.requests("connect") > 0, run
    assert any("does not speak TLS" in error for error in run.errors("connect")), run


def test_a_user_class_can_bring_its_own_context(tls_server, certificates):
    os.environ["UPPER_TEST_CA"] = str(certificates.ca)
    try:
        run = run_locust(
            f"tls://127.0.0.1:{tls_server.port}",
            locustfile=ROOT / "tests" / "locustfiles" / "tls_context_factory.py",
            users=2,
            run_time="2s",
        )
    finally:
        del os.environ["UPPER_TEST_CA"]
    assert run.returncode == 0, run
    assert run.requests("upper") > 0 and run.failed("Aggregated") == 0, run


def test_an_unreadable_tls_file_is_a_clear_error_at_start(tmp_path):
    missing = str(tmp_path / "missing-ca.pem")
    run = run_locust("tls://127.0.0.1:5000", "--tls-cafile", missing, run_time="2s")
    assert run.returncode != 0, run
    assert "missing-ca.pem" in run.stderr and "Traceback" not in run.stderr, run
    assert not run.stats, run

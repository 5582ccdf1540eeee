"""The pod-deletion-cost updater against a fake Kubernetes API server on loopback, over HTTPS
with its own CA, the way a pod reaches the real one (service account token, CA, downward API)."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.kube import ANNOTATION, DeletionCost, PodRef, deletion_cost_patch

TOKEN = "eyJhbGciOiJSUzI1NiJ9.test-token"


class FakeApiServer:
    """Answers PATCH /api/v1/namespaces/NS/pods/NAME like the API server does for a merge patch
    (the pod back, its annotations merged), and records every request."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.requests: list[dict[str, Any]] = []
        self.annotations: dict[str, str] = {"kept": "yes"}
        self.status = 200
        self.on_request: Any = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_PATCH(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.requests.append(
                    {
                        "path": self.path,
                        "authorization": self.headers["Authorization"],
                        "content_type": self.headers["Content-Type"],
                        "body": json.loads(body),
                    }
                )
                if fake.on_request is not None:
                    fake.on_request()
                if fake.status != 200:
                    self.send_response(fake.status)
                    self.end_headers()
                    self.wfile.write(b'{"kind":"Status","status":"Failure"}')
                    return
                fake.annotations.update(json.loads(body)["metadata"]["annotations"])
                out = json.dumps({"kind": "Pod", "metadata": {"annotations": fake.annotations}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out.encode())

            def log_message(self, *_args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeApiServer, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (Debian: apt-get install openssl)")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=kubernetes", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(TOKEN)
    (account / "namespace").write_text("voice\n")
    shutil.copy(cert, account / "ca.crt")  # the cluster's CA: here the server's own cert
    server = FakeApiServer(cert, key)
    try:
        yield server, account
    finally:
        server.close()


def env_for(server: FakeApiServer) -> dict[str, str]:
    return {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(server.port),
        "POD_NAME": "agent-5d8f7c-x2k4q",
    }


def test_pod_ref_needs_a_cluster_a_pod_name_and_a_token(tmp_path: Path) -> None:
    account = tmp_path / "sa"
    account.mkdir()
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "POD_NAME": "p"}
    assert PodRef.from_environ(env, account) is None  # no token mounted
    (account / "token").write_text("t")
    assert PodRef.from_environ({"POD_NAME": "p"}, account) is None  # not in a cluster
    assert PodRef.from_environ({"KUBERNETES_SERVICE_HOST": "h"}, account) is None  # no name
    ref = PodRef.from_environ({**env, "POD_NAMESPACE": "voice"}, account)
    assert ref is not None
    assert ref.url == "https://10.0.0.1:443/api/v1/namespaces/voice/pods/p"
    assert ref.ca_file is None


def test_patch_body() -> None:
    assert json.loads(deletion_cost_patch(17)) == {"metadata": {"annotations": {ANNOTATION: "17"}}}


def test_annotation_follows_the_calls(api: tuple[FakeApiServer, Path]) -> None:
    server, account = api
    ref = PodRef.from_environ(env_for(server), account)
    assert ref is not None and ref.namespace == "voice"  # from the mounted namespace file
    calls = [3]
    updater = DeletionCost(ref, lambda: calls[0])

    async def main() -> None:
        await updater.update()
        await updater.update()  # unchanged: no request
        calls[0] = 0
        await updater.update()
        server.status = 403  # RBAC missing: logged, kept for the next round
        calls[0] = 5
        await updater.update()
        assert updater.sent == 0
        server.status = 200
        await updater.update()

    asyncio.run(main())
    path = "/api/v1/namespaces/voice/pods/agent-5d8f7c-x2k4q"
    assert [r["path"] for r in server.requests] == [path] * 4
    assert {r["authorization"] for r in server.requests} == {f"Bearer {TOKEN}"}
    assert {r["content_type"] for r in server.requests} == {"application/merge-patch+json"}
    costs = [r["body"]["metadata"]["annotations"][ANNOTATION] for r in server.requests]
    assert costs == ["3", "0", "5", "5"]
    assert server.annotations == {"kept": "yes", ANNOTATION: "5"}  # a merge, not a replace
    assert (updater.sent, updater.patches) == (5, 3)


def test_a_server_with_another_ca_is_refused(api: tuple[FakeApiServer, Path]) -> None:
    server, account = api
    (account / "ca.crt").unlink()  # the system CAs do not know the fake cluster's
    ref = PodRef.from_environ(env_for(server), account)
    assert ref is not None
    updater = DeletionCost(ref, lambda: 1)
    asyncio.run(updater.update())
    assert updater.sent is None and server.requests == []


def test_serve_keeps_the_cost_while_it_runs(
    api: tuple[FakeApiServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring pipeline serve uses: in a pod, a patch with the current count at once."""
    import pipeline.kube
    from stages.telephony.serve import keep_deletion_cost

    server, account = api
    monkeypatch.setattr(pipeline.kube, "SERVICE_ACCOUNT", account)
    for key, value in env_for(server).items():
        monkeypatch.setenv(key, value)
    got = threading.Event()
    server.on_request = got.set

    async def main() -> None:
        async with keep_deletion_cost(lambda: 4):
            await asyncio.to_thread(got.wait, 10)

    asyncio.run(main())
    assert server.requests[0]["body"] == {"metadata": {"annotations": {ANNOTATION: "4"}}}


def test_outside_a_cluster_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    from stages.telephony.serve import keep_deletion_cost

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    async def main() -> int:
        async with keep_deletion_cost(lambda: 4):
            return len(asyncio.all_tasks())

    assert asyncio.run(main()) == 1  # no updater task beside main

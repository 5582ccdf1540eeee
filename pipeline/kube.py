"""Keep this pod's ``controller.kubernetes.io/pod-deletion-cost`` equal to its calls in progress.

When a Deployment scales in, Kubernetes removes the pods with the lowest deletion cost first.
With the annotation kept equal to the calls a pod is carrying, a scale-in takes idle pods (cost
0) before busy ones, and never picks a pod with 40 calls over one with 2.

How: inside a cluster (``KUBERNETES_SERVICE_HOST`` set, the pod's name and namespace given by
the downward API as ``POD_NAME`` and ``POD_NAMESPACE``, a service account token mounted), the
server reads its count of calls every ``interval_s`` and, when it changed, sends one JSON merge
patch of the pod's annotations to the API server (``PATCH /api/v1/namespaces/NS/pods/NAME``,
HTTPS checked against the service account's CA, the token re-read each time since bound tokens
rotate). The pod's service account needs ``patch`` on ``pods`` (deploy/kubernetes/rbac.yaml). A
failed patch is logged once per kind of failure with the fix and tried again on the next change
or period; calls never wait on it (the request runs in a thread).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from .clock import Clock, RealClock
from .errors import PipelineError

log = structlog.get_logger("pipeline.kube")

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True, slots=True)
class PodRef:
    """Where this pod is and how to reach the API server as its service account."""

    api: str  # https://HOST:PORT
    namespace: str
    name: str
    token_file: Path
    ca_file: Path | None

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, account: Path | None = None
    ) -> PodRef | None:
        """This pod, when running in a cluster with its name in the environment; else None.
        ``account``: the mounted service account (default :data:`SERVICE_ACCOUNT`)."""
        env = os.environ if environ is None else environ
        account = SERVICE_ACCOUNT if account is None else account
        host = env.get("KUBERNETES_SERVICE_HOST")
        name = env.get("POD_NAME")
        token = account / "token"
        if not host or not name or not token.is_file():
            return None
        namespace = env.get("POD_NAMESPACE") or _read(account / "namespace") or "default"
        port = env.get("KUBERNETES_SERVICE_PORT", "443")
        shown = f"[{host}]" if ":" in host else host
        ca = account / "ca.crt"
        return cls(f"https://{shown}:{port}", namespace, name, token, ca if ca.is_file() else None)

    @property
    def url(self) -> str:
        return f"{self.api}/api/v1/namespaces/{self.namespace}/pods/{self.name}"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def deletion_cost_patch(cost: int) -> bytes:
    """The JSON merge patch that sets the annotation (values of annotations are strings)."""
    return json.dumps({"metadata": {"annotations": {ANNOTATION: str(int(cost))}}}).encode()


class PatchError(PipelineError):
    """The API server refused the patch or could not be reached."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


def patch_pod(ref: PodRef, body: bytes, timeout_s: float = 5.0) -> None:
    """Send one merge patch of the pod (blocking; run it in a thread)."""
    token = _read(ref.token_file)
    request = urllib.request.Request(
        ref.url,
        data=body,
        method="PATCH",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/merge-patch+json",
            "Accept": "application/json",
        },
    )
    context = None
    if ref.api.startswith("https:"):
        context = ssl.create_default_context(cafile=str(ref.ca_file) if ref.ca_file else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        fix = {
            401: "the service account token was refused; is automountServiceAccountToken off?",
            403: "grant the pod's service account 'patch' on 'pods' (deploy/kubernetes/rbac.yaml)",
            404: "POD_NAME / POD_NAMESPACE do not name this pod; set them from the downward API "
            "(fieldRef metadata.name / metadata.namespace)",
        }.get(exc.code, "see the API server's answer")
        raise PatchError(f"http {exc.code}", f"PATCH {ref.url}: HTTP {exc.code}; {fix}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PatchError("unreachable", f"PATCH {ref.url}: {reason}") from exc


class DeletionCost:
    """Keeps the annotation equal to ``read()`` (the calls in progress): ``await run()`` until
    cancelled. ``sent`` is the last value the API server accepted."""

    def __init__(
        self,
        ref: PodRef,
        read: Callable[[], int],
        *,
        interval_s: float = 2.0,
        clock: Clock | None = None,
        patch: Callable[[PodRef, bytes], None] = patch_pod,
    ) -> None:
        self.ref = ref
        self.read = read
        self.interval_s = interval_s
        self.clock: Clock = clock or RealClock()
        self.patch = patch
        self.sent: int | None = None
        self.patches = 0
        self._failures: set[str] = set()

    async def update(self) -> None:
        """One round: patch if the count changed since the last accepted patch."""
        cost = int(self.read())
        if cost == self.sent:
            return
        try:
            await asyncio.to_thread(self.patch, self.ref, deletion_cost_patch(cost))
        except PatchError as exc:
            if exc.kind not in self._failures:  # once per kind, not every two seconds
                self._failures.add(exc.kind)
                log.warning("pod deletion cost not updated", error=str(exc), cost=cost)
            return
        if self._failures:
            log.info("pod deletion cost updated again", cost=cost)
            self._failures.clear()
        self.sent = cost
        self.patches += 1

    async def run(self) -> None:
        log.info("keeping pod deletion cost", pod=self.ref.name, namespace=self.ref.namespace)
        while True:
            await self.update()
            await self.clock.sleep(self.interval_s)

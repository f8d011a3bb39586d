"""Several Sinch projects behind one simulator address, as Sinch serves them: each project has
its own simulator (its own state, key id and secret, tokens and HMAC secret).

Routing (a plain ASGI app in front of one `create_simulator_app` per project):
- `/v1/projects/{projectId}/...` goes to that project's simulator (404 for an unknown project);
- `POST /oauth2/token` goes to the project whose key id the request's Basic credentials name (the
  first project's otherwise, which then refuses an unknown key), so a token is only ever valid at
  the project whose key fetched it: a GET for project B made with A's credentials is answered 401
  and counted (`unauthorized` in B's stats);
- `/_sim/projects/{projectId}/_sim/...` is that project's control API (its own `/_sim/...`: a
  `SimulatorControl(f"{base}/_sim/projects/{projectId}")` drives that project), and `/_sim/...`
  the first project's.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from devtools.simulator.app import create_simulator_app

_API = "/v1/projects/"
_CONTROL = "/_sim/projects/"


@dataclass(frozen=True, slots=True)
class ProjectKeys:
    """One simulated project: its id, its API key (id and secret) and its callbacks' HMAC
    secret (all fake)."""

    project_id: str
    key_id: str
    key_secret: str
    hmac_secret: str


def _key_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, encoded = value.decode("latin-1").partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return decoded.partition(":")[0]
    return None


class ProjectsSimulator:
    """The ASGI app of the module docstring. `apps[project_id]` is each project's simulator
    (its `state.simulator` holds its stats and registrations)."""

    def __init__(
        self,
        projects: Sequence[ProjectKeys],
        *,
        token_ttl_seconds: int = 3600,
        seed: int | None = None,
    ) -> None:
        if not projects:
            raise ValueError("at least one project")
        self.apps: dict[str, FastAPI] = {
            p.project_id: create_simulator_app(
                project_id=p.project_id,
                key_id=p.key_id,
                key_secret=p.key_secret,
                hmac_secret=p.hmac_secret,
                token_ttl_seconds=token_ttl_seconds,
                seed=None if seed is None else seed + number,
            )
            for number, p in enumerate(projects)
        }
        self._by_key = {p.key_id: p.project_id for p in projects}
        self.first = self.apps[projects[0].project_id]
        self.at_shutdown: list[Callable[[], None]] = []
        """Called, in order, as the server shuts down (the CLI saves the state files there)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # The projects' simulators keep no resource to open or close.
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            for step in self.at_shutdown:
                step()
            await send({"type": "lifespan.shutdown.complete"})
            return
        path: str = scope.get("path", "")
        app = self.first
        if path.startswith(_API):
            app = self.apps.get(path[len(_API) :].partition("/")[0], self.first)
        elif path.startswith(_CONTROL):
            project_id, _, rest = path[len(_CONTROL) :].partition("/")
            if project_id in self.apps:
                app = self.apps[project_id]
                scope = {**scope, "path": "/" + rest, "raw_path": b"/" + rest.encode()}
        elif path == "/oauth2/token":
            app = self.apps[self._by_key.get(_key_id(scope) or "", next(iter(self.apps)))]
        await app(scope, receive, send)

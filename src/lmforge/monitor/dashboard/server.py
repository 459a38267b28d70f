"""The dashboard web server: a read-only Starlette (ASGI) app served by uvicorn.

    lmforge dashboard runs/ --port 8765     # then open http://127.0.0.1:8765

Routes (GET/HEAD only):
    /                              the page (static/index.html)
    /static/{app.js,style.css,plotly.min.js}   plotly.js comes from the installed `plotly` package: no CDN
    /api/runs                      every run with status and key figures
    /api/runs/NAME/metrics?offset=B   metrics events from byte B on, and the next offset (live updates)
    /api/runs/NAME/report/eval|data   RUN/eval/report.json, RUN/data/report.json
    /api/runs/NAME/samples         RUN/eval/samples.jsonl
    /api/runs/NAME/config          RUN/config.yaml (text)

Security: binds 127.0.0.1 by default; TrustedHostMiddleware refuses foreign Host headers (DNS
rebinding); paths with `..`, backslashes or NUL are refused before routing, run names must match a
strict pattern and resolve inside RUNS_DIR, static files come from a fixed list; other methods get 405;
responses carry a same-origin Content-Security-Policy.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from lmforge.errors import LmforgeError
from lmforge.monitor.dashboard.runs import RunStore, read_chunk

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def _imports() -> Any:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise LmforgeError(f"the dashboard needs starlette, uvicorn and plotly ({e}): "
                           "pip install starlette uvicorn plotly") from e


def _plotly_js() -> bytes:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as e:
        raise LmforgeError(f"the dashboard serves plotly.js from the `plotly` package ({e}): pip install plotly") from e
    return get_plotlyjs().encode("utf-8")


class _Guard:
    """Pure ASGI middleware: read-only methods, no traversal-looking paths, security headers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        raw = scope.get("raw_path") or scope.get("path", "").encode()
        path = unquote(unquote(raw.decode("latin-1")))  # double-decode catches %252e%252e too
        segments = path.replace("\\", "/").split("/")
        if ".." in segments or "\\" in path or "\x00" in path:
            return await _plain(send, 400, b"bad path")
        if scope["method"] not in ("GET", "HEAD"):
            return await _plain(send, 405, b"read-only", [(b"allow", b"GET, HEAD")])

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _plain(send: Callable, status: int, body: bytes, extra: list | None = None) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + SECURITY_HEADERS + (extra or [])})
    await send({"type": "http.response.body", "body": body})


def default_allowed_hosts(host: str) -> list[str]:
    hosts = ["127.0.0.1", "localhost", "[::1]", "::1"]
    if host not in ("127.0.0.1", "localhost", "::1"):
        if host not in ("0.0.0.0", "::"):
            hosts.append(host)
        else:  # listening everywhere: accept this machine's own names, nothing else
            hosts += [socket.gethostname(), socket.getfqdn()]
    return hosts


def create_app(runs_dir: str | Path, *, allowed_hosts: list[str] | None = None) -> Any:
    """The ASGI app serving `runs_dir` (a folder of runs, or one run directory)."""
    _imports()
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    store = RunStore(runs_dir)
    plotly_cache: dict[str, bytes] = {}
    static_files = {"app.js": "text/javascript", "charts.js": "text/javascript", "style.css": "text/css"}

    def not_found(what: str) -> JSONResponse:
        return JSONResponse({"error": f"{what} not found"}, status_code=404)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"cache-control": "no-cache"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "plotly.min.js":
            if "js" not in plotly_cache:
                plotly_cache["js"] = _plotly_js()
            return Response(plotly_cache["js"], media_type="text/javascript",
                            headers={"cache-control": "public, max-age=86400"})
        if name not in static_files:
            return not_found(f"static file {name!r}")
        return FileResponse(STATIC / name, media_type=static_files[name], headers={"cache-control": "no-cache"})

    async def runs(request: Request) -> Response:
        summaries = [s for s in (store.summary(n) for n in store.names()) if s is not None]
        summaries.sort(key=lambda s: -(s.get("first_time") or 0))
        return JSONResponse({"runs_dir": str(store.root), "now": time.time(), "runs": summaries})

    async def metrics(request: Request) -> Response:
        name = request.path_params["name"]
        path = store.path(name)
        if path is None:
            return not_found(f"run {name!r}")
        try:
            offset = max(0, int(request.query_params.get("offset", "0")))
        except ValueError:
            return JSONResponse({"error": "offset must be an integer"}, status_code=400)
        events, new, more, reset = read_chunk(path / "metrics.jsonl", offset)
        return JSONResponse({"events": events, "offset": new, "more": more, "reset": reset},
                            headers={"cache-control": "no-store"})

    async def report(request: Request) -> Response:
        name, which = request.path_params["name"], request.path_params["which"]
        if store.path(name) is None or which not in ("eval", "data"):
            return not_found(f"run {name!r}")
        rep = store.report(name, which)
        return not_found(f"{which}/report.json of {name!r}") if rep is None else JSONResponse(rep)

    async def config(request: Request) -> Response:
        name = request.path_params["name"]
        run = store.path(name)
        path = store.file(run, "config.yaml") if run is not None else None
        if path is None:
            return not_found(f"config.yaml of {name!r}")
        text = path.read_text(encoding="utf-8", errors="replace")
        return Response(text, media_type="text/plain; charset=utf-8")

    async def samples(request: Request) -> Response:
        name = request.path_params["name"]
        if store.path(name) is None:
            return not_found(f"run {name!r}")
        return JSONResponse({"samples": store.samples(name)})

    routes = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/static/{name}", static, methods=["GET", "HEAD"]),
        Route("/api/runs", runs, methods=["GET", "HEAD"]),
        Route("/api/runs/{name}/metrics", metrics, methods=["GET", "HEAD"]),
        Route("/api/runs/{name}/report/{which}", report, methods=["GET", "HEAD"]),
        Route("/api/runs/{name}/samples", samples, methods=["GET", "HEAD"]),
        Route("/api/runs/{name}/config", config, methods=["GET", "HEAD"]),
    ]
    middleware = [Middleware(_Guard), Middleware(TrustedHostMiddleware,
                                                 allowed_hosts=allowed_hosts or default_allowed_hosts("127.0.0.1"))]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.store = store
    return app


class DashboardServer:
    """uvicorn in a background thread (tests, notebooks): `with DashboardServer(runs) as srv: srv.url`."""

    def __init__(self, runs_dir: str | Path, *, host: str = "127.0.0.1", port: int = 0,
                 allowed_hosts: list[str] | None = None) -> None:
        import uvicorn

        app = create_app(runs_dir, allowed_hosts=allowed_hosts or default_allowed_hosts(host))
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                     access_log=False, lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self.host = host
        self.port = port

    def start(self) -> DashboardServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise LmforgeError(f"the dashboard could not listen on {self.host}:{self.port}")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(runs_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8765,
          allowed_hosts: list[str] | None = None) -> None:
    """Serve until Ctrl-C (the `lmforge dashboard` command)."""
    _imports()
    import uvicorn

    root = Path(runs_dir)
    if not root.is_dir():
        raise LmforgeError(f"runs directory {root} does not exist: pass the folder holding your runs (default runs/)")
    app = create_app(root, allowed_hosts=allowed_hosts or default_allowed_hosts(host))
    try:  # uvicorn would log and sys.exit on a busy port; check first for a clear message
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise LmforgeError(f"cannot listen on {host}:{port} ({e}): pick another --port") from e
    print(f"lmforge dashboard: serving {root.resolve()} on http://{host}:{port}  (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")

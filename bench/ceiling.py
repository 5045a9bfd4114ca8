"""The ceiling: a bare aiohttp app that reads the body and answers 200. Nothing can be faster."""

from __future__ import annotations

import argparse

from aiohttp import web

from igw.runtime import new_event_loop


async def webhook(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok")


def create_app() -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/api/v1/instagram/webhook", webhook)
    return app


def serve(app: web.Application, description: str | None) -> None:
    """Serve ``app`` on ``--host``/``--port`` as the gateway would: its event loop, no access log."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=new_event_loop())


def main() -> None:
    serve(create_app(), __doc__)


if __name__ == "__main__":
    main()

"""The Graph API emulator's app-scoped id mapping: ``GET /{version}/{asid}/ids_for_pages``.

Meta's Data Deletion Request callback names a person by their app-scoped id (ASID); on Messenger,
``ids_for_pages`` with an app access token (``<app id>|<app secret>``) gives the page-scoped ids
(PSIDs) the same person has on the business's Pages. Tests and ``igw dev`` teach the emulator a
mapping through ``POST /_emulator/app_scoped_ids`` (``{"asid", "page_id", "psid"}``).
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["add_ids_routes"]

ids_key = web.AppKey("app_scoped_ids", dict)


def _graph_error(message: str, code: int, status: int = 400) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "emulator"}},
        status=status,
    )


async def _ids_for_pages(request: web.Request) -> web.Response:
    token = request.query.get("access_token", "")
    app_id, _, secret = token.partition("|")
    if not app_id.isdigit() or not secret:
        # Meta answers a user or Page token here with an error: this edge needs the app token.
        return _graph_error("An app access token is required to request this resource.", 104)
    asid = request.match_info["object_id"]
    mapping: dict[str, list[tuple[str, str]]] = request.app[ids_key]
    page = request.query.get("page")
    data = [{"id": psid, "page": {"id": page_id}} for page_id, psid in mapping.get(asid, ()) if page in (None, page_id)]
    return web.json_response({"data": data})


async def _learn(request: web.Request) -> web.Response:
    doc = await request.json()
    request.app[ids_key].setdefault(str(doc["asid"]), []).append((str(doc["page_id"]), str(doc["psid"])))
    return web.json_response({"ok": True})


def add_ids_routes(app: web.Application) -> None:
    app[ids_key] = {}
    app.router.add_get("/{version}/{object_id}/ids_for_pages", _ids_for_pages)
    app.router.add_post("/_emulator/app_scoped_ids", _learn)

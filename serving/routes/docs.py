"""GET /docs and /redoc from files installed with the package: the first page the demo opens
works with no internet (FastAPI's own pages load Swagger UI and ReDoc from a CDN and stay
blank offline). The files are the `fastapi-offline` package's copies of swagger-ui-dist and
redoc's standalone bundle (MIT), pinned in requirements.lock."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

router = APIRouter(include_in_schema=False)
ASSETS = Path(str(files("fastapi_offline") / "static"))
PREFIX = "/docs-assets"
_TYPES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}
TITLE = "propensity scorer"


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{TITLE} - Swagger UI",
                               swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
                               swagger_css_url=f"{PREFIX}/swagger-ui.css",
                               swagger_favicon_url=f"{PREFIX}/favicon.png",
                               # no badge from validator.swagger.io on a scorer off localhost
                               swagger_ui_parameters={"validatorUrl": None})


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    # ReDoc's "powered by" logo still points at its CDN: offline, the image fails and ReDoc
    # hides it (its onError), nothing else is fetched
    return get_redoc_html(openapi_url="/openapi.json", title=f"{TITLE} - ReDoc",
                          redoc_js_url=f"{PREFIX}/redoc.standalone.js",
                          redoc_favicon_url=f"{PREFIX}/favicon.png", with_google_fonts=False)


@router.get(PREFIX + "/{name}")
async def asset(name: str) -> FileResponse:
    """One of the four files the pages load (any other name is a 404, not a path walk)."""
    media = _TYPES.get(name)
    if media is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no docs asset {name!r}")
    return FileResponse(ASSETS / name, media_type=media)

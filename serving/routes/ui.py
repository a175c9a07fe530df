"""GET /ui: the marketing-ops page (plain HTML and a little JavaScript, Plotly bundled)."""

from __future__ import annotations

from pathlib import Path

import plotly
from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(prefix="/ui", include_in_schema=False)
PAGE = Path(__file__).resolve().parents[1] / "ui"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@router.get("")
async def page() -> FileResponse:
    return FileResponse(PAGE / "index.html", media_type="text/html")


@router.get("/app.js")
async def script() -> FileResponse:
    return FileResponse(PAGE / "app.js", media_type="text/javascript")


@router.get("/monitoring.js")
async def monitoring_script() -> FileResponse:
    return FileResponse(PAGE / "monitoring.js", media_type="text/javascript")


@router.get("/forecast.js")
async def forecast_script() -> FileResponse:
    return FileResponse(PAGE / "forecast.js", media_type="text/javascript")


@router.get("/plotly.min.js")
async def plotly_js() -> FileResponse:
    """Served by the app itself: the page works with no internet."""
    return FileResponse(PLOTLY_JS, media_type="text/javascript")

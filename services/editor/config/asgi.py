"""ASGI entry point: HTTP through Django, WebSockets through Channels, lifespan for shutdown."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up)
from collab.access import OriginGuard  # noqa: E402
from collab.lifespan import lifespan  # noqa: E402
from collab.routing import websocket_urlpatterns  # noqa: E402
from collab_common.logs import keep_above_debug  # noqa: E402
from django.conf import settings  # noqa: E402

# The WebSocket protocol logs secrets on uvicorn's logger at DEBUG: never below INFO,
# even when COLLAB_LOG_LEVEL=DEBUG. (Its warnings and errors still reach the log.)
keep_above_debug("uvicorn.error")

# COLLAB_ALLOWED_ORIGINS: sockets from other Origins are closed with 4403 and API calls
# from them get 403, before any token or database work (README, "Authentication").
application = ProtocolTypeRouter(
    {
        "http": OriginGuard(django_asgi_app, settings.COLLAB_ALLOWED_ORIGINS),
        "websocket": OriginGuard(URLRouter(websocket_urlpatterns), settings.COLLAB_ALLOWED_ORIGINS),
        "lifespan": lifespan,
    }
)

"""ASGI servers: running tasks get SHUTDOWN_TIMEOUT when the server shuts down.

uvicorn (and gunicorn with uvicorn workers) ends its process on SIGTERM in a
way that runs no exit hook: without this, running and waiting tasks are lost
at every deploy. Wrap the project's ASGI application::

    from django.core.asgi import get_asgi_application
    from django_tasks_local.asgi import close_on_shutdown

    application = close_on_shutdown(get_asgi_application())

The wrapper answers the ASGI lifespan protocol, which Django's own handler
does not, and at the server's shutdown closes every task backend of the
process as the interpreter's exit would (``runtime.close_for_exit``). Every
other connection goes to the application unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .runtime import close_for_exit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def close_on_shutdown(application: ASGIApp) -> ASGIApp:
    """``application``, with the task backends closed at the server's shutdown."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await application(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # In a thread: the waiting blocks, and the loop may still have
                # requests to finish.
                await asyncio.to_thread(close_for_exit)
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app

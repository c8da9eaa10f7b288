"""The gateway's HTTP surfaces, one module each (docs/architecture.md, "Gateway HTTP API").

`invoke` is raw ASGI for speed and runs before FastAPI's routing; the others are FastAPI
routers included by `app.create_app`.
"""

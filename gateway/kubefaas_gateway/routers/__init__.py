"""The gateway's HTTP surfaces, one module each (DESIGN §4).

`invoke` is raw ASGI for speed and runs before FastAPI's routing; the others are FastAPI
routers included by `app.create_app`.
"""

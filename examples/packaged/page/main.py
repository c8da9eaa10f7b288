"""Render templates/page.html with Jinja2 (a requirement) through the function's own
package `render`."""

import json

from render import page


def handler(event, context):
    body = event.get("body") or "{}"
    data = json.loads(body) if isinstance(body, str) and body.strip() else {}
    html = page(name=data.get("name", "world"), items=data.get("items", []))
    return {"statusCode": 200, "headers": {"content-type": "text/html"}, "body": html}

"""The function's own package: loads the templates folder next to the code."""

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
_ENV = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape())


def page(name, items):
    return _ENV.get_template("page.html").render(name=name, items=items)

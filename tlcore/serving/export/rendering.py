"""Rendering the bundle's text files from the templates in ``templates/`` (Jinja2).

The templates make Markdown and Python, not HTML: no autoescaping. A name a template uses
but is not given is an error (``StrictUndefined``), not an empty string in a shipped file.
"""

from __future__ import annotations

import functools

TEMPLATES_DIR = "templates"


def _code(text) -> str:
    """Markdown inline code: ``name`` → `` `name` ``."""
    return f"`{text}`"


def _pct(value) -> str:
    return "–" if value is None else f"{value:.1%}"


@functools.cache
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tlcore.serving.export", TEMPLATES_DIR),
        autoescape=False,  # Markdown and Python, not HTML
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(code=_code, pct=_pct, py=repr)
    return env


def render(template: str, **context) -> str:
    """``templates/<template>`` rendered with ``context``.

    Filters for the templates: ``code`` (Markdown inline code), ``pct`` (``0.5`` →
    ``50.0%``, None → ``–``) and ``py`` (a Python literal, `repr`).

    Raises:
        jinja2.UndefinedError: the template uses a name ``context`` lacks.
    """
    return _environment().get_template(template).render(**context)

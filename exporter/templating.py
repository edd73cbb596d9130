"""The one Jinja2 environment every HTML page is rendered with.

Autoescaping is on for every template, so text from configuration or workload output is
escaped unless a template says otherwise, and a name a template uses but the code did not
pass is an error rather than an empty string. Templates live in ``exporter/templates/``.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """Made once: templates are compiled on first use and cached by Jinja2."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("exporter", "templates"),
        autoescape=True,  # .html and .svg alike: the safe page is the default one
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, **context: Any) -> str:
    """Render ``exporter/templates/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)

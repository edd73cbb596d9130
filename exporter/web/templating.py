"""The one Jinja2 environment every HTML page is rendered with.

Autoescaping is on for every template, so text from configuration or workload output is
escaped unless a template says otherwise, and a name a template uses but the code did not
pass is an error rather than an empty string. Each package keeps its own templates in its
``templates/`` folder (``exporter/web/templates``: the landing page; ``exporter/pages/templates``:
the status page) and names its package when it renders one, so this module knows no page.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2


class _Environment(jinja2.Environment):
    """Jinja2's environment, with ``view.name`` reading a dict's key before its attributes.

    The pages' views are dicts. Jinja2 tries an attribute first, so a key named ``items`` or
    ``values`` would render as the dict's method, and every other key costs a failed
    attribute lookup (a third of the status page's render time)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


@functools.lru_cache(maxsize=None)
def environment(package: str) -> jinja2.Environment:
    """One per package, made once: templates are compiled on first use and cached by Jinja2."""
    return _Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        autoescape=True,  # .html and .svg alike: the safe page is the default one
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(package: str, template: str, **context: Any) -> str:
    """Render ``<package>/templates/<template>`` with ``context``."""
    return environment(package).get_template(template).render(**context)

"""Sphinx configuration for trio-aggregator (built with ``-W -n``: every warning is an error)."""

from __future__ import annotations
import __future__

import inspect
import os
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

# Build from a checkout even when the package is not installed (nox installs it anyway).
sys.path.insert(0, os.path.abspath(".."))

import attrs

import trio_aggregator

# -- Project -----------------------------------------------------------------

project = "trio-aggregator"
author = "trio-aggregator developers"
copyright = "trio-aggregator developers"
version = release = trio_aggregator.__version__

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinxcontrib_trio",
]

# Trio and the standard library are linked through intersphinx from inventories checked
# in under ``_inventories/``, so the build never goes to the network (and ``-W`` does not
# depend on it). trio.inv is the objects.inv of Trio 0.35.0's docs (built from its sdist,
# as Read the Docs builds "stable"); python.inv is that of the Python 3.11 docs (Debian's
# python3.11-doc). Refresh them by replacing the files.
intersphinx_mapping = {
    "trio": ("https://trio.readthedocs.io/en/stable", "_inventories/trio.inv"),
    "python": ("https://docs.python.org/3", "_inventories/python.inv"),
}

master_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
default_role = "obj"
nitpicky = True
pygments_style = "default"
pygments_dark_style = "monokai"

# -- autodoc / napoleon --------------------------------------------------------

# "signature" keeps the hints in the signature; with "description" sphinxcontrib-trio
# loses them.
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

# -- nitpicky: the targets that no checked-in inventory holds ------------------

nitpick_ignore_regex = [
    # ``Buffer`` (typing_extensions; collections.abc.Buffer is new in 3.12, and the
    # checked-in Python inventory is 3.11's).
    (r"py:class", r"Buffer"),
    # prometheus-client, in trio_aggregator.prometheus's annotations (no inventory).
    (r"py:class", r"(prometheus_client(\..*)?|CollectorRegistry|Collector|Metric)"),
]

# -- HTML ----------------------------------------------------------------------

html_theme = "furo"
html_title = f"trio-aggregator {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False


# -- Every public name must be documented ---------------------------------------


def _public_names() -> list[str]:
    """The names a user can import from ``trio_aggregator`` (modules and dunders aside)."""
    if hasattr(trio_aggregator, "__all__"):
        return sorted(trio_aggregator.__all__)
    return sorted(
        name
        for name, value in vars(trio_aggregator).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        # ``from __future__ import annotations`` leaves a public-looking ``annotations``.
        and name not in __future__.all_feature_names
    )


def _public_members(cls: type) -> set[str]:
    """The methods, properties and attrs fields a class defines itself with public names."""
    names = {
        name
        for name, value in vars(cls).items()
        if not name.startswith("_")
        and (inspect.isfunction(value) or isinstance(value, (property, classmethod, staticmethod)))
    }
    if attrs.has(cls):
        names.update(field.name for field in attrs.fields(cls) if not field.name.startswith("_"))
    return names


def _check_public_api_documented(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn (an error under ``-W``) for each public name or member that no page documents."""
    from sphinx.util import logging as sphinx_logging

    log = sphinx_logging.getLogger("trio_aggregator.docs")
    documented = set(env.get_domain("py").objects)
    missing: list[str] = []
    for name in _public_names():
        if f"trio_aggregator.{name}" not in documented:
            missing.append(name)
            continue
        value = getattr(trio_aggregator, name)
        if inspect.isclass(value) and not issubclass(value, BaseException):
            missing.extend(
                f"{name}.{member}"
                for member in sorted(_public_members(value))
                if f"trio_aggregator.{name}.{member}" not in documented
            )
    for name in missing:
        log.warning(
            "trio_aggregator.%s is public but not documented: add it to docs/api.rst",
            name,
            type="trio_aggregator",
            subtype="undocumented",
        )


# -- napoleon: Google sections in functions and classes, not in attribute docstrings --
#
# The package documents attributes, attrs fields and properties with one-line prose
# docstrings ("Capacity of the memory channel, in items: 0 is a rendezvous, ...").
# Napoleon reads such a docstring as Google's inline ``type: description`` form and
# turns the words before the first colon into a bogus type reference. Types come from
# the annotations anyway, so napoleon is not run on those docstrings.

_NOT_NAPOLEON = frozenset({"attribute", "data", "property"})


def _napoleon_except_attributes(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    from sphinx.ext.napoleon import _process_docstring

    if what not in _NOT_NAPOLEON:
        _process_docstring(app, what, name, obj, options, lines)


def _route_napoleon(app: Sphinx) -> None:
    from sphinx.ext.napoleon import _process_docstring

    for listener in list(app.events.listeners["autodoc-process-docstring"]):
        if listener.handler is _process_docstring:
            app.disconnect(listener.id)
            app.connect(
                "autodoc-process-docstring", _napoleon_except_attributes, priority=listener.priority
            )


# -- Signatures ------------------------------------------------------------------

_ATTRS_DEFAULT = re.compile(r"attr_dict\['(\w+)'\]\.default")


def _tidy_signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: Any,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """Show real defaults for attrs classes, and no return type on ``async with`` helpers.

    ``autodoc_preserve_defaults`` reads defaults from the source, which for an
    attrs-generated ``__init__`` is ``attr_dict['name'].default``: put the value back.
    An `asynccontextmanager` function is rendered ``async with f(...) as x`` by
    sphinxcontrib-trio, where ``-> AsyncGenerator[...]`` would only mislead.
    """
    if signature and attrs.has(obj):
        fields = attrs.fields_dict(obj)
        signature = _ATTRS_DEFAULT.sub(lambda m: repr(fields[m[1]].default), signature)
        return signature, return_annotation
    if what == "function" and inspect.isasyncgenfunction(getattr(obj, "__wrapped__", None)):
        return signature, None
    return None


# -- Defaults of the configuration's settings ---------------------------------------

_SHOW_DEFAULTS = ("trio_aggregator.AggregatorConfig",)


def _add_default(
    app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """End each setting's docstring with its default, read from the attrs field.

    The API page documents `AggregatorConfig` with a short signature and its settings
    grouped by topic; the defaults come from the code, so they cannot drift.
    """
    owner, _, field_name = name.rpartition(".")
    if what != "attribute" or owner not in _SHOW_DEFAULTS:
        return
    cls = getattr(trio_aggregator, owner.rpartition(".")[2])
    field = attrs.fields_dict(cls).get(field_name)
    if field is None or not field.init:
        return
    while lines and not lines[-1].strip():
        lines.pop()
    note = "Required." if field.default is attrs.NOTHING else f"Default: ``{field.default!r}``."
    lines += [f"{lines.pop()} {note}" if lines else note, ""]


def setup(app: Sphinx) -> None:
    _route_napoleon(app)
    app.connect("autodoc-process-docstring", _add_default)
    app.connect("autodoc-process-signature", _tidy_signature)
    app.connect("env-check-consistency", _check_public_api_documented)

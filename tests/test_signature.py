"""Docstrings in the three common styles, read the same way for tools and stage parameters."""

from __future__ import annotations

import sys
import types
from collections.abc import AsyncIterator

import pytest

from pipeline import Frame, stage
from pipeline.signature import parse_docstring, read_signature, signature_model
from pipeline.spec import make_spec
from stages.tools import load_tool

REST = """Look up an order.

Reads the order book.

:param order_id: the order's id, as printed
    on the receipt
:type order_id: str
:param verbose: add the line items
:returns: the order as text
:raises KeyError: never
"""

GOOGLE = """Look up an order.

Reads the order book.

Args:
    order_id (str): the order's id, as printed
        on the receipt
    verbose: add the line items

Returns:
    the order as text
"""

NUMPY = """Look up an order.

Reads the order book.

Parameters
----------
order_id : str
    the order's id, as printed
    on the receipt
verbose : bool, optional
    add the line items

Returns
-------
str
    the order as text
"""

WANT_PARAMS = {
    "order_id": "the order's id, as printed on the receipt",
    "verbose": "add the line items",
}


@pytest.mark.parametrize("doc", [REST, GOOGLE, NUMPY], ids=["rest", "google", "numpy"])
def test_each_style_gives_the_same_description_and_parameters(doc: str) -> None:
    parsed = parse_docstring(doc)
    assert parsed.summary == "Look up an order."
    assert parsed.description == "Look up an order.\n\nReads the order book."
    assert dict(parsed.params) == WANT_PARAMS


def _tool_module(doc: str) -> str:
    name = f"sigtest_{abs(hash(doc))}"
    mod = types.ModuleType(name)

    def lookup(order_id: str, verbose: bool = False) -> str:
        return order_id

    lookup.__doc__ = doc
    mod.lookup = lookup  # type: ignore[attr-defined]
    sys.modules[name] = mod
    return f"{name}:lookup"


@pytest.mark.parametrize("doc", [REST, GOOGLE, NUMPY], ids=["rest", "google", "numpy"])
def test_a_tool_schema_has_no_docstring_markup_and_every_parameter_text(doc: str) -> None:
    schema = load_tool(_tool_module(doc)).schema()
    assert schema["description"] == "Look up an order.\n\nReads the order book."
    props = schema["parameters"]["properties"]
    assert props["order_id"]["description"] == WANT_PARAMS["order_id"]
    assert props["verbose"]["description"] == WANT_PARAMS["verbose"]
    text = repr(schema)
    for markup in (":param", ":type", ":returns", "----", "Args:", "Returns"):
        assert markup not in text


@pytest.mark.parametrize("style", ["rest", "numpy"])
def test_stage_parameter_docs_in_rest_and_numpy_style(style: str) -> None:
    if style == "rest":
        doc = "Scale audio.\n\n:param db: gain in decibels\n:param limit: clip at full scale\n"
    else:
        doc = (
            "Scale audio.\n\nParameters\n----------\ndb : float\n    gain in decibels\n"
            "limit : bool\n    clip at full scale\n"
        )

    async def scale(
        frames: AsyncIterator[Frame], *, db: float = 0.0, limit: bool = True
    ) -> AsyncIterator[Frame]:
        async for f in frames:
            yield f

    scale.__doc__ = doc
    spec = make_spec(scale, name="scale")
    assert spec.doc == "Scale audio."
    assert {n: p.doc for n, p in spec.params.items()} == {
        "db": "gain in decibels",
        "limit": "clip at full scale",
    }


def test_the_stage_decorator_and_the_tool_loader_share_one_model_builder() -> None:
    @stage("sig_demo", register=False)
    async def demo(frames: AsyncIterator[Frame], *, schema: int = 1) -> AsyncIterator[Frame]:
        """Demo.

        Parameters:
            schema: a name pydantic models use for a method
        """
        async for f in frames:
            yield f

    spec = make_spec(demo, name="sig_demo")
    values, problems = spec.validate({"schema": "3"})
    assert (values, problems) == ({"schema": 3}, [])
    _values, problems = spec.validate({"shema": 3})
    assert problems == [
        ("shema", "stage type 'sig_demo' has no parameter 'shema'; did you mean 'schema'?")
    ]
    _doc, params = read_signature(demo)
    model = signature_model("m", [p for p in params if p.kind is p.kind.KEYWORD_ONLY])
    assert model.model_json_schema(by_alias=True)["properties"]["schema"]["description"] == (
        "a name pydantic models use for a method"
    )

"""Request models of the registered analyses' parameters (``POST /v1/analyses/{name}``).

Each analysis gets a pydantic model built from the signature of its registered function
(:func:`attnscope.analysis.registry.register_analysis`): the parameter names, types and defaults come
from the signature; the bounds of every number, the length of every string and list, and the parameters
whose value is another trace come from :data:`PARAMS` below. So the OpenAPI document lists each
analysis's parameters, and a wrongly typed or out-of-range value is refused with 422 before any model
work. A numeric parameter with no bounds here is left out of the REST model (tests check that none is).

Parameters whose value is a trace (``compare``'s ``other``, ``head_projection``'s ``others``) take
explorer trace ids (``POST /v1/traces``) over REST.
"""

from __future__ import annotations

import inspect
import logging
import typing
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, Field, create_model
from pydantic.fields import FieldInfo

from .schemas import LayerIndex, HeadIndex, MAX_POSITION, Position, Seed, _Strict

log = logging.getLogger("attnscope.server")

Name = Annotated[str, Field(min_length=1, max_length=64)]  # method / metric / dtype names (the analysis checks them)
StreamName = Annotated[str, Field(min_length=1, max_length=32, description="Attention stream, e.g. self or cross; "
                                                                           "default the trace's only/self stream.")]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
TraceId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                               description="An explorer trace id (POST /v1/traces).")]


class TraceRef:
    """Marker: this parameter's value is a trace, sent as an explorer trace id (or a list of them)."""


MAX_TRACES = 16  # traces one projection may mix

# analysis -> parameter -> (type, Field with bounds and description); the default is the function's own.
# "*" holds parameters shared by every analysis.
PARAMS: dict[str, dict[str, tuple[Any, FieldInfo]]] = {
    "*": {"stream": (StreamName | None, Field())},
    "attention_graph": {
        "layer": (LayerIndex, Field(description="Model layer (negative counts from the end).")),
        "head": (HeadIndex | None, Field(description="Model head; default the mean over heads.")),
        "threshold": (Fraction, Field(description="Edges with weight >= threshold, 0..1.")),
    },
    "compare": {
        "other": (Annotated[TraceId | None, TraceRef],
                  Field(description="Trace id of the second trace (POST /v1/traces); default itself.")),
        "align": (Name, Field()),
    },
    "distance_profile": {"max_distance": (int, Field(ge=1, le=MAX_POSITION))},
    "flow": {
        "head_fusion": (Name, Field()),
        "residual": (Fraction, Field(description="Residual weight of the identity, 0..1.")),
        "outputs": (list[Position] | None, Field(max_length=4096, description="Output positions (default every "
                                                                              "position).")),
    },
    "head_projection": {
        "method": (Name, Field()),
        "features": (Name, Field()),
        "others": (Annotated[list[TraceId], TraceRef],
                   Field(max_length=MAX_TRACES, description="Trace ids of more traces to project (POST /v1/traces).")),
        "perplexity": (float, Field(gt=0.0, le=1000.0)),
        "n_neighbors": (int, Field(ge=2, le=1000)),
        "seed": (Seed, Field()),
    },
    "head_roles": {
        "window": (int, Field(ge=0, le=MAX_POSITION, description="Tokens either side counted as local.")),
        "threshold": (Fraction, Field()),
    },
    "layer_summary": {"metric": (Name, Field())},
    "memory_estimate": {
        "layers": (int | None, Field(ge=1, le=4096)),
        "heads": (int | None, Field(ge=1, le=4096)),
        "length": (int | None, Field(ge=1, le=10_000_000)),
        "batch": (int, Field(ge=1, le=1_000_000)),
        "dtype": (Name, Field()),
        "block": (int, Field(ge=1, le=10_000_000)),
    },
    "rollout": {
        "head_fusion": (Name, Field()),
        "residual": (Fraction, Field(description="Residual weight of the identity, 0..1.")),
        "discard_ratio": (float, Field(ge=0.0, lt=1.0, description="Fraction of the weakest links dropped, "
                                                                  "0 <= r < 1.")),
    },
}


def _unbounded_numbers(schema: Any) -> bool:
    """Does a JSON Schema admit an integer or number without a lower and an upper bound?"""
    if isinstance(schema, dict):
        if schema.get("type") in ("integer", "number"):
            lo = "minimum" in schema or "exclusiveMinimum" in schema
            hi = "maximum" in schema or "exclusiveMaximum" in schema
            if not (lo and hi):
                return True
        return any(_unbounded_numbers(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_unbounded_numbers(v) for v in schema)
    return False


def _from_signature(p: inspect.Parameter, hints: dict[str, Any]) -> tuple[Any, FieldInfo] | None:
    """A bool or string parameter can come straight from its annotation; anything else needs a PARAMS row."""
    tp = hints.get(p.name, p.annotation)
    if tp is bool:
        return bool, Field()
    if tp is str:
        return Name, Field()
    if tp == (str | None):
        return Name | None, Field()
    return None


def trace_params(model: type[BaseModel]) -> list[str]:
    """Names of the fields whose value is a trace id (or a list of them)."""
    out = []
    for name, f in model.model_fields.items():
        if TraceRef in f.metadata:
            out.append(name)
    return out


@lru_cache(maxsize=None)
def params_model(name: str) -> type[BaseModel]:
    """The pydantic model of analysis ``name``'s parameters (built once per analysis)."""
    from ..analysis import analysis_info

    info = analysis_info(name)
    try:
        hints = typing.get_type_hints(info.func)
    except Exception:  # an annotation that does not evaluate: the PARAMS rows still apply
        hints = {}
    table = {**PARAMS["*"], **PARAMS.get(name, {})}
    fields: dict[str, Any] = {}
    for pname, p in info.params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        spec = table.get(pname) or _from_signature(p, hints)
        if spec is None:
            log.warning("analysis %s: parameter %s has no REST type/bounds; it is not accepted over REST", name, pname)
            continue
        tp, field = spec
        default = ... if p.default is inspect.Parameter.empty else p.default
        field = FieldInfo.merge_field_infos(field, default=default)
        if _unbounded_numbers(create_model("_Check", x=(tp, field)).model_json_schema()):
            log.warning("analysis %s: parameter %s has unbounded numbers; it is not accepted over REST", name, pname)
            continue
        fields[pname] = (tp, field)
    camel = "".join(part.capitalize() for part in name.split("_"))
    model = create_model(f"{camel}Params", __base__=_Strict, __doc__=f"Parameters of the {name} analysis "
                                                                       f"(defaults as in the Python function).",
                         **fields)
    return model


def rest_params(name: str) -> dict[str, dict[str, Any]]:
    """JSON Schema of each parameter accepted over REST (for ``GET /v1/analyses``)."""
    schema = params_model(name).model_json_schema()
    return schema.get("properties", {})

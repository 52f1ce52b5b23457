"""``/docs``: the API reference as one self-contained HTML page, rendered on the server from the OpenAPI document.

It works offline (no script, no stylesheet or font from a CDN) and links the machine-readable
``/openapi.json``. Every string from the document is HTML-escaped.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ccc}
.ep{border:1px solid #ddd;border-radius:4px;margin:.8em 0;padding:.5em .8em}
.m{font-weight:bold;display:inline-block;min-width:4em} code,.p{font-family:ui-monospace,monospace}
table{border-collapse:collapse;margin:.4em 0} td,th{border:1px solid #e3e3e3;padding:.15em .5em;text-align:left;
vertical-align:top} th{background:#f6f6f6} .d{white-space:pre-wrap;color:#444} .c{color:#666}
"""


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type(schema: dict[str, Any]) -> str:
    """A short type description: ``integer``, ``array of string``, ``A | null``, ``one of "a", "b"``."""
    if not isinstance(schema, dict):
        return ""
    if "$ref" in schema:
        return _ref_name(schema["$ref"])
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_type(s) for s in schema[key])
    t = schema.get("type", "")
    if t == "array":
        items = schema.get("prefixItems")
        if items:
            return "[" + ", ".join(_type(s) for s in items) + "]"
        return f"array of {_type(schema.get('items', {})) or 'any'}"
    if t == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type(schema['additionalProperties'])}"
    return t or "any"


_BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
           ("minLength", "min length"), ("maxLength", "max length"), ("minItems", "min items"),
           ("maxItems", "max items"), ("pattern", "pattern"))


def _num(v: Any) -> Any:
    """1000.0 -> 1000 (the OpenAPI document may write integer bounds as floats)."""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53 else v


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    stack = [schema]
    while stack:
        s = stack.pop()
        if not isinstance(s, dict):
            continue
        parts += [f"{label} {_num(s[k])}" for k, label in _BOUNDS if k in s]
        stack += [x for key in ("anyOf", "oneOf") for x in s.get(key, [])]
        if isinstance(s.get("items"), dict):
            stack.append(s["items"])
        stack += s.get("prefixItems", [])
    return "; ".join(dict.fromkeys(parts))


def _fields_table(name: str, components: dict[str, Any]) -> str:
    schema = components.get(name, {})
    props = schema.get("properties", {})
    if not props:
        return ""
    required = set(schema.get("required", []))
    rows = []
    for field, s in props.items():
        default = "" if "default" not in s else json.dumps(s["default"])
        desc = s.get("description", "")
        for sub in s.get("anyOf", []):
            desc = desc or sub.get("description", "")
        rows.append("<tr><td class=p>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=d>{}</td></tr>".format(
            escape(field) + (" *" if field in required else ""), escape(_type(s)), escape(_constraints(s)),
            escape(default), escape(desc)))
    return ("<table><tr><th>field (* required)</th><th>type</th><th>limits</th><th>default</th><th>description</th>"
            "</tr>" + "".join(rows) + "</table>")


def render(spec: dict[str, Any]) -> str:
    """The page for an OpenAPI document (``app.openapi()``)."""
    info = spec.get("info", {})
    components = spec.get("components", {}).get("schemas", {})
    out = ["<!doctype html><html lang=en><head><meta charset=utf-8>",
           f"<title>{escape(str(info.get('title', 'API')))} API reference</title><style>{_STYLE}</style></head><body>",
           f"<h1>{escape(str(info.get('title', 'API')))} API <span class=c>v{escape(str(info.get('version', '')))}"
           "</span></h1>",
           f"<p class=d>{escape(str(info.get('description', '')))}</p>",
           "<p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI "
           f"{escape(str(spec.get('openapi', '')))}). Request bodies are JSON; every field is listed with its "
           "limits. A request outside them is answered with 422.</p>"]
    referenced: list[str] = []
    by_tag: dict[str, list[tuple[str, str, dict]]] = {}
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            if not isinstance(op, dict):
                continue
            tag = (op.get("tags") or ["other"])[0]
            by_tag.setdefault(tag, []).append((path, method, op))
    for tag, eps in by_tag.items():
        out.append(f"<h2>{escape(tag)}</h2>")
        for path, method, op in eps:
            out.append(f"<div class=ep id=\"{escape(method + path, quote=True)}\"><span class=m>"
                       f"{escape(method.upper())}</span> <span class=p>{escape(path)}</span> — "
                       f"{escape(op.get('summary', ''))}")
            if op.get("description"):
                out.append(f"<div class=d>{escape(op['description'])}</div>")
            params = op.get("parameters", [])
            if params:
                out.append("<p>Parameters:</p><table><tr><th>name</th><th>in</th><th>type</th><th>limits</th></tr>")
                for p in params:
                    s = p.get("schema", {})
                    out.append(f"<tr><td class=p>{escape(p.get('name', ''))}{' *' if p.get('required') else ''}</td>"
                               f"<td>{escape(p.get('in', ''))}</td><td>{escape(_type(s))}</td>"
                               f"<td>{escape(_constraints(s))}</td></tr>")
                out.append("</table>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if "$ref" in body:
                name = _ref_name(body["$ref"])
                out.append(f"<p>Body: <a href=\"#schema-{escape(name, quote=True)}\">{escape(name)}</a></p>")
                referenced.append(name)
            codes = ", ".join(escape(str(c)) for c in op.get("responses", {}))
            out.append(f"<p class=c>Responses: {codes}</p></div>")
    out.append("<h2>Schemas</h2>")
    for name in sorted(components):
        out.append(f"<h3 id=\"schema-{escape(name, quote=True)}\">{escape(name)}</h3>")
        if components[name].get("description"):
            out.append(f"<div class=d>{escape(components[name]['description'])}</div>")
        out.append(_fields_table(name, components))
    out.append("</body></html>")
    return "\n".join(out)

"""A minimal JSON Schema (2020-12 subset) validator: exactly the keywords used by
schemas/event-stream.schema.json, so the tests need no new dependency."""
import re

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_KNOWN = {"$schema", "$id", "title", "description", "type", "required", "properties", "allOf", "if",
          "then", "enum", "const", "$defs", "$ref", "items", "prefixItems", "minItems", "maxItems",
          "minimum", "maximum", "minLength", "additionalProperties", "pattern"}


def errors(value, schema, root=None, path="$"):
    root = root if root is not None else schema
    out = []
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"minischema does not support {unknown}")
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/")
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        out += errors(value, target, root, path)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return out + [f"{path}: {value!r} is not of type {types}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {value!r} not in enum")
    if "const" in schema and value != schema["const"]:
        out.append(f"{path}: {value!r} != const")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        out.append(f"{path}: {value!r} does not match {schema['pattern']}")
    num = _TYPES["number"](value)
    if num and "minimum" in schema and value < schema["minimum"]:
        out.append(f"{path}: {value} < minimum")
    if num and "maximum" in schema and value > schema["maximum"]:
        out.append(f"{path}: {value} > maximum")
    if isinstance(value, str) and "minLength" in schema and len(value) < schema["minLength"]:
        out.append(f"{path}: too short")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{path}: missing {key}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                out += errors(value[key], sub, root, f"{path}.{key}")
        if "additionalProperties" in schema:
            for key in set(value) - set(schema.get("properties", {})):
                out += errors(value[key], schema["additionalProperties"], root, f"{path}.{key}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(f"{path}: too few items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{path}: too many items")
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            if i < len(prefix):
                out += errors(item, prefix[i], root, f"{path}[{i}]")
            elif "items" in schema:
                out += errors(item, schema["items"], root, f"{path}[{i}]")
    for sub in schema.get("allOf", []):
        out += errors(value, sub, root, path)
    if "if" in schema:
        if not errors(value, schema["if"], root, path):
            if "then" in schema:
                out += errors(value, schema["then"], root, path)
    return out

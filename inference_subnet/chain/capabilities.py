"""What a runtime can do, read from its own metadata.

Subtensor adds and removes calls between spec versions (``commit_crv3_weights`` came and went, timelocked
and mechanism weights are recent), and test networks run older or newer code than mainnet. Reading the
calls and runtime APIs the runtime *declares* lets one code path serve all of them; guessing from a spec
version number breaks on the first runtime that does not follow the guess.

Pure: works on the decoded metadata value, no connection needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Capabilities", "capabilities_from_metadata"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Calls (``"Module.call"``) and runtime API methods (``"Api.method"``) a runtime declares."""

    calls: frozenset[str]
    runtime_apis: frozenset[str]

    @classmethod
    def of(cls, calls: Iterable[str] = (), runtime_apis: Iterable[str] = ()) -> Capabilities:
        """Built by hand: the in-memory chain and unit tests describe a runtime this way."""
        return cls(calls=frozenset(calls), runtime_apis=frozenset(runtime_apis))

    def has_call(self, module: str, name: str) -> bool:
        return f"{module}.{name}" in self.calls

    def has_api(self, api: str, method: str) -> bool:
        return f"{api}.{method}" in self.runtime_apis


def capabilities_from_metadata(metadata: Any) -> Capabilities:
    """Read the calls and runtime APIs from runtime metadata (V14 or V15).

    Accepts what ``async-substrate-interface`` hands out: its ``Runtime`` (``.metadata``), the decoded
    ``MetadataVersioned`` scale object (``.value``), or the plain decoded value itself. Call names are
    resolved from the portable type registry inside the metadata, so no runtime configuration needs to
    be primed first. V14 metadata declares no runtime APIs: ``runtime_apis`` is then empty.
    """
    body = _metadata_body(metadata)
    types = _type_table(body)
    calls: set[str] = set()
    for pallet in body.get("pallets") or ():
        ref = pallet.get("calls")
        if not ref:
            continue
        type_id = ref["ty"] if isinstance(ref, Mapping) else ref
        for variant in _variants(types.get(int(type_id))):
            calls.add(f"{pallet['name']}.{variant['name']}")
    apis = {
        f"{api['name']}.{method['name']}"
        for api in body.get("apis") or ()
        for method in api.get("methods") or ()
    }
    return Capabilities(calls=frozenset(calls), runtime_apis=frozenset(apis))


def _metadata_body(metadata: Any) -> Mapping[str, Any]:
    """The versioned body (``{"types", "pallets", "apis", ...}``) whatever wrapper it came in."""
    value = metadata
    if not hasattr(value, "value") and hasattr(value, "metadata"):  # async-substrate-interface Runtime
        value = value.metadata
    if hasattr(value, "value") and not isinstance(value, (Mapping, tuple, list)):  # scale object
        value = value.value
    if isinstance(value, (tuple, list)):  # (magic, {"V15": body})
        value = value[-1]
    if not isinstance(value, Mapping):
        raise TypeError(f"not runtime metadata: {type(metadata).__name__}")
    if "pallets" not in value:
        versions = [k for k in value if isinstance(k, str) and k.startswith("V")]
        if len(versions) != 1:
            raise TypeError(f"unsupported metadata versions: {sorted(map(str, value))}")
        value = value[versions[0]]
    if not isinstance(value, Mapping) or "pallets" not in value:
        raise TypeError("metadata has no pallets: only V14 and later are supported")
    return value


def _type_table(body: Mapping[str, Any]) -> dict[int, Mapping[str, Any]]:
    registry = body.get("types") or {}
    entries = registry.get("types", ()) if isinstance(registry, Mapping) else registry
    return {int(entry["id"]): entry["type"] for entry in entries}


def _variants(type_def: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not type_def:
        return []
    definition = type_def.get("def") or {}
    variant = definition.get("variant") if isinstance(definition, Mapping) else None
    if not variant:
        return []
    return list(variant.get("variants") or ())

"""Mapping rules (target field -> rule) and routing filters (``when:``).

Public API (used by bridge.destinations, the engine and `lead-bridge map`):

* ``compile_mapping(rules, *, unmapped, path, default=None) -> CompiledMapping``
  compiles a destination's ``mapping:`` at config load; raises ConfigError whose
  problems each name their key path (``destinations[0].mapping.Email.transform[1]``).
  ``rules`` None means: use ``default`` (the connector's default mapping), or, when
  that is None too, pass the lead through as received.
* ``CompiledMapping.apply(lead) -> MappedRecord`` maps one stored lead (a dict as
  the provider sent it); raises only MappingError.
* ``CompiledMapping.targets`` the target field names (for connector field checks).
* ``compile_filter(when, *, path) -> LeadFilter | None`` and ``LeadFilter.matches(lead)``.
* ``DEFAULT_MAPPINGS`` the built-in connector types' default mappings.
"""

from bridge.mapping.defaults import DEFAULT_MAPPINGS
from bridge.mapping.filters import LeadFilter, compile_filter
from bridge.mapping.rules import CompiledMapping, MappedRecord, compile_mapping

__all__ = [
    "DEFAULT_MAPPINGS",
    "CompiledMapping",
    "LeadFilter",
    "MappedRecord",
    "compile_filter",
    "compile_mapping",
]

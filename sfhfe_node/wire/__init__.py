"""Wire formats: the insight schema and the meta-parameter reply."""

from sfhfe_node.wire.insight import (
    INSIGHT_SCHEMA,
    MAX_INSIGHT_BYTES,
    decode_body,
    make_insight,
    validate_insight,
    validate_meta,
)

__all__ = [
    "INSIGHT_SCHEMA",
    "MAX_INSIGHT_BYTES",
    "decode_body",
    "make_insight",
    "validate_insight",
    "validate_meta",
]

"""The delivery engine: claim due deliveries, map, call the connector, record the outcome.

One ``DestinationWorker`` per destination, each with its own claim loop,
concurrency limit, token bucket and pause (after a 429), so a slow or stuck
destination never holds up another one, nor intake. Where each part lives:

- ``supervisor``: the :class:`Engine`, one supervised loop per destination;
- ``worker``: a destination's claim loop, its slots and leases;
- ``attempt``: one attempt (or batch call) within its deadline;
- ``outcomes``: the record a lead becomes and what an attempt's result means;
- ``throttle``: pause after a 429, rate tokens, the API budget guard;
- ``connection``: the connector's startup, shared by a destination's attempts;
- ``finisher``: outcomes committed in batches.
"""

from bridge.engine.finisher import Finisher, outcome_finisher
from bridge.engine.outcomes import idempotency_key
from bridge.engine.supervisor import Engine

__all__ = ["Engine", "Finisher", "idempotency_key", "outcome_finisher"]

"""Operator operations: one implementation of each query and action, shared by
the admin API (:mod:`bridge.admin`), the CLI (:mod:`bridge.cli`) and the console
(:mod:`bridge.console`).

* :mod:`.credentials`  check a destination's credentials (``Connector.check``)
* :mod:`.search`       find leads by id, email, phone, time, status, destination
* :mod:`.timeline`     one lead: as received, mapped per destination, every attempt
* :mod:`.dead_letters` filter dead letters, preview and run a bulk replay
* :mod:`.overview`     per-destination health, unrouted leads, schema drift
* :mod:`.drift`        schema drift: provider keys no mapping reads (+ gauge)
* :mod:`.mapping`      the mapping playground (``lead-bridge map``)
* :mod:`.testsend`     send a synthetic test lead to one destination
* :mod:`.audit`        who did what, when (never personal data)

Each function takes the store and/or the runtime and returns plain dataclasses;
the callers only render them.
"""

"""The pure core: no I/O, no clock, no aiokafka or aiohttp.

- ``events``: CloudEvents in (decode, validate) and out (encode, for producers).
- ``document``: the WorkfloPlus job document models.
- ``job``: job state and the reducer ``apply(state, event, now)``.
- ``basicsync``: the request body built from a state, its bytes and hash.
- ``results``: success and failure records and the fixed set of failure reasons.
"""

"""The pure core: no I/O, no clock, no aiokafka or aiohttp.

- ``events``: CloudEvents in (decode, validate) and out (encode, for producers).
- ``document``: the WorkfloPlus job document's parts as pydantic models (event data).
- ``state``: the job state as plain immutable data.
- ``state_codec``: the job state's changelog value, written and read back.
- ``state_schema``: the changelog value's schema, and the reader of its older forms.
- ``settled``: the mark of a settled state's changelog record, and the job a restore keeps
  unread by it.
- ``job``: the reducer ``apply(state, event, now)``.
- ``basicsync``: the request body composed from a state, its bytes and hash.
- ``results``: success and failure records and the fixed set of failure reasons.
"""

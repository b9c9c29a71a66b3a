"""Test doubles that ship with basicsync, for tests, demos and benchmarks (never production).

Like Kafka Streams' ``TopologyTestDriver`` or FastStream's ``testing`` package, they live next
to the product so every user can run them, but under a name that says what they are:

- ``workfloplus``: a local stand-in for the WorkfloPlus API (tokens, basicSync, get job) with
  inspection and fault injection, run by ``basicsync sandbox``.

A double never imports the consumer's code (``consumer.*`` outside its own package), so it
checks the consumer independently instead of agreeing with it by construction;
``tests/unit/test_testing_doubles.py`` keeps it so.
"""

"""The shared conformance suite, shipped as a pytest plugin (``pytest --obsqueue-engine URL``)."""

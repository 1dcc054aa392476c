"""The ``inference-subnet`` command."""

"""A whole subnet on one machine: chain, miners of mixed behaviours, every validator service, the gateway."""

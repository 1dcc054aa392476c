"""Build Bittensor inference subnets: a subnet author writes Tasks; the framework does the rest."""

__version__ = "0.1.0"

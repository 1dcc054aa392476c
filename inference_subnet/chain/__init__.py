"""Wallet files, keypairs, the ChainClient (Substrate and in-memory) and weight math."""

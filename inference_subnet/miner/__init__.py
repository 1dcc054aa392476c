"""The miner's ASGI app: btauth/1, shared nonce store, metagraph blacklist, body limits, quotas."""

"""Example tasks, each a Task plus a reference miner handler."""

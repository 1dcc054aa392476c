"""Persistence: Redis (state, streams, Lua) and SQL (API keys, request log)."""

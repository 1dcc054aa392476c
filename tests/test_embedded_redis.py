"""The embedded Valkey server: processes that start one at the same moment each get their own."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import json, time
import redis
from inference_subnet.store.redis import embedded_url
url = embedded_url()
client = redis.Redis.from_url(url)
client.set("owner", "%d")
time.sleep(1.0)  # every sibling has started and written its own key by now
print(json.dumps({"url": url, "owner": client.get("owner").decode()}))
"""


def test_processes_starting_at_once_each_get_their_own_server() -> None:
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD % n], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    results = []
    for n, child in enumerate(children):
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-2000:]
        results.append((n, json.loads(out.strip().splitlines()[-1])))
    assert len({r["url"] for _, r in results}) == 4
    assert all(r["owner"] == str(n) for n, r in results)  # nobody wrote into a sibling's server

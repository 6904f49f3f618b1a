"""examples/shop.py runs as a real program and its revenue projection is exact."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from eventstore import EventStore

ROOT = Path(__file__).resolve().parent.parent


def test_shop_example(tmp_path: Path) -> None:
    data = tmp_path / "shop"
    proc = subprocess.run(
        [sys.executable, "examples/shop.py", str(data)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for refusal in [
        "refused (pay an empty order): order x is empty: nothing to pay",
        "refused (add to a paid order): order 0099 is paid: items can no longer be added",
        "refused (ship an unpaid order): order y is placed: only paid orders ship",
        "refused (pay the wrong amount): order z costs 1700 cents, not 1",
        "refused (place without a customer): an order needs a customer",
    ]:
        assert refusal in out
    assert "order 0099 is still paid at v2" in out
    assert "conflict: stream 'order-0100': expected version 0, actual version 1" in out
    assert "order 0100 after the retry: ['tea', 'pot']" in out
    caught_up = re.search(r"revenue after catching up on \d+ payments: (\S+)", out)
    resumed = re.search(r"revenue resumed from its checkpoint: (\S+)", out)
    assert caught_up and resumed and caught_up.group(1) == resumed.group(1)
    if hasattr(EventStore, "compact"):
        compacted = re.search(r"compacted (\d+) events into 1 ESDB file", out)
        assert compacted and int(compacted.group(1)) > 100
    assert "projection exact: True" in out
    assert "saved with its position: True" in out
    # Check the read model from outside too: a fold over the whole log.
    with EventStore.open(data) as store:
        paid = list(store.read_all(types=["OrderPaid"]))
        cents = sum(e.data["amount_cents"] for e in paid)
        saved = store.get_checkpoint("revenue")
        assert saved["state"]["cents"] == cents and saved["state"]["orders"] == len(paid)
        assert saved["position"] == str(paid[-1].id)
        if hasattr(EventStore, "compact"):
            assert list(Path(data, "archive").glob("*.esdb"))
    live = re.search(r"revenue live after 30 more orders: (\S+) from (\d+) payments", out)
    assert live and live.group(1) == f"{cents // 100}.{cents % 100:02d}"
    assert int(live.group(2)) == len(paid)

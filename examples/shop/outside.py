"""The services the shop talks to, simulated with files so that the example runs anywhere.

Each effect is one line appended to a journal under `SHOP_DIR` (default `var/shop`) naming its order:
`receipts.txt`, `outbox.txt`, `parcels.txt`, `pickups.txt`. A task that did its work twice leaves two
lines, which is how the tests count duplicated effects. Each call takes `SHOP_WORK_S` seconds
(default 0.5), standing for real work: rendering a document, a network round trip.

The courier's booking service is flaky on demand: while the file `SHOP_DIR/courier-busy` holds a
number above zero, each booking uses one up and fails with `CourierBusy`.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path

RECEIPTS = "receipts.txt"
OUTBOX = "outbox.txt"
PARCELS = "parcels.txt"
PICKUPS = "pickups.txt"
COURIER_BUSY = "courier-busy"


class CourierBusy(Exception):
    """Raised when the courier's booking service asks to try again later."""


def shop_dir() -> Path:
    return Path(os.environ.get("SHOP_DIR", "var/shop"))


def work_s() -> float:
    return float(os.environ.get("SHOP_WORK_S", "0.5"))


def print_receipt(order_id: int, total_cents: int) -> str:
    time.sleep(work_s())
    _record(RECEIPTS, f"order={order_id} total={total_cents / 100:.2f}")
    return f"receipt of order {order_id}"


async def send_mail(to: str, subject: str, *, order_id: int) -> None:
    await asyncio.sleep(work_s())
    _record(OUTBOX, f"order={order_id} to={to} subject={subject}")


def pack(order_id: int, items: list[str], *, gift_wrap: bool) -> None:
    time.sleep(work_s())
    _record(PARCELS, f"order={order_id} items={','.join(items)} gift_wrap={'yes' if gift_wrap else 'no'}")


def book_pickup(order_id: int) -> str:
    time.sleep(work_s())
    if _courier_is_busy():
        raise CourierBusy("the courier's booking service is busy, try again later")
    _record(PICKUPS, f"order={order_id}")
    return f"pickup-{order_id}"


def make_courier_busy(failures: int) -> None:
    """The next `failures` bookings fail (whichever process makes them)."""
    folder = shop_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / COURIER_BUSY).write_text(str(failures))


def read_journal(name: str) -> list[str]:
    path = shop_dir() / name
    return path.read_text().splitlines() if path.exists() else []


def _record(journal: str, line: str) -> None:
    folder = shop_dir()
    folder.mkdir(parents=True, exist_ok=True)
    # One write to a file opened for appending: lines of concurrent runs never interleave.
    fd = os.open(folder / journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def _courier_is_busy() -> bool:
    try:
        with (shop_dir() / COURIER_BUSY).open("r+") as file:
            fcntl.flock(file, fcntl.LOCK_EX)  # workers and the API may book at once
            left = int(file.read().strip() or "0")
            if left <= 0:
                return False
            file.seek(0)
            file.truncate()
            file.write(str(left - 1))
            return True
    except FileNotFoundError:
        return False

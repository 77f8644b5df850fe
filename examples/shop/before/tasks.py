"""What the shop does after answering: slow or flaky work that the client should not wait for."""

from __future__ import annotations

from examples.shop import outside


def write_receipt(order_id: int, total_cents: int) -> str:
    """Renders the order's receipt (a plain `def`: blocking work)."""
    return outside.print_receipt(order_id, total_cents)


async def send_confirmation(order_id: int, email: str) -> None:
    """Emails the customer (an `async def`: it waits on the mail server)."""
    await outside.send_mail(email, f"Order {order_id} confirmed", order_id=order_id)


def pack_parcel(order_id: int, *, items: list[str], gift_wrap: bool = False) -> None:
    """Asks the warehouse to pack the order (keyword arguments)."""
    outside.pack(order_id, items, gift_wrap=gift_wrap)


def book_courier(order_id: int) -> str:
    """Books a pick-up; the courier's service is sometimes busy (`CourierBusy`): worth another try."""
    return outside.book_pickup(order_id)

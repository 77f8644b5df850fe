"""A small shop API: an order is answered at once, its slow work runs in the background."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, Field

from jobs.web import QueuedTasks, install, lifespan

from .tasks import book_courier, pack_parcel, send_confirmation, write_receipt

app = FastAPI(title="Shop", lifespan=lifespan)
install(app)


class Order(BaseModel):
    id: int = Field(gt=0)
    email: str = Field(min_length=3, max_length=254)
    total_cents: int = Field(ge=0)


class Shipment(BaseModel):
    items: list[str] = Field(min_length=1)
    gift_wrap: bool = False


@app.post("/orders", status_code=202)
def place_order(order: Order, background_tasks: QueuedTasks) -> dict[str, int]:
    """Takes an order; its receipt and confirmation email follow in the background."""
    background_tasks.add_task(write_receipt, order.id, order.total_cents)
    background_tasks.add_task(send_confirmation, order.id, order.email)
    return {"id": order.id}


@app.post("/orders/{order_id}/shipment", status_code=202)
def ship_order(order_id: int, shipment: Shipment, background_tasks: QueuedTasks) -> dict[str, int]:
    """Ships an order: the parcel is packed and a courier booked in the background."""
    background_tasks.add_task(pack_parcel, order_id, items=shipment.items, gift_wrap=shipment.gift_wrap)
    background_tasks.add_task(book_courier, order_id)
    return {"id": order_id}

"""A small shop API, before (`before/`: FastAPI's `BackgroundTasks`) and after (`after/`: the kit) the move.

`diff -u examples/shop/before/tasks.py examples/shop/after/tasks.py` and the same for `app.py` are the
whole migration. `outside.py` stands for the services the shop talks to (printer, mail, warehouse,
courier), simulated with files under `SHOP_DIR`.
"""

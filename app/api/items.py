from __future__ import annotations

from uuid import UUID

from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from app.api.paging import Limit, Skip
from app.auth import CALLER, CHECKED_IN_WRITE
from app.errors import ITEM_NOT_FOUND, NOT_ENOUGH_PERMISSIONS
from app.openapi import error_responses
from app.schemas import ItemCreate, ItemPublic, ItemsPublic, ItemUpdate, Message, changes
from app.services import ITEM_WITH_CALLER, READ_WITH_CALLER, ItemService

# An item the caller may not see, or that is not there.
ITEM_ERRORS = error_responses({403: [NOT_ENOUGH_PERMISSIONS], 404: [ITEM_NOT_FOUND]})
# The item named by the path, read in the caller's own statement.
WITH_ITEM = {READ_WITH_CALLER: ITEM_WITH_CALLER}
# A change that checks its caller in its own statement; the item and the caller are read only when it changes nothing.
CHANGE = {CHECKED_IN_WRITE: CALLER}
CHANGE_ITEM = {**WITH_ITEM, **CHANGE}


class ItemsController(Controller):
    path = "/items"
    tags = ["items"]

    @get("/")
    async def read_items(self, items: NamedDependency[ItemService], skip: Skip = 0, limit: Limit = 100) -> ItemsPublic:
        """Items visible to the caller (all of them for a superuser), newest first."""
        return await items.page(skip, limit)

    @post("/", status_code=200, opt=CHANGE)
    async def create_item(self, items: NamedDependency[ItemService], data: JSONBody[ItemCreate]) -> ItemPublic:
        """Create an item owned by the caller."""
        return await items.create(data)

    @get("/{id:str}", opt=WITH_ITEM, responses=ITEM_ERRORS)
    async def read_item(self, items: NamedDependency[ItemService], id: FromPath[UUID]) -> ItemPublic:
        """One item, if the caller owns it or is a superuser."""
        return await items.read(id)

    @put("/{id:str}", opt=CHANGE_ITEM, responses=ITEM_ERRORS)
    async def update_item(
        self, items: NamedDependency[ItemService], id: FromPath[UUID], data: JSONBody[ItemUpdate]
    ) -> ItemPublic:
        """Partial update of title and description."""
        return await items.update(id, changes(data))

    @delete("/{id:str}", status_code=200, opt=CHANGE_ITEM, responses=ITEM_ERRORS)
    async def delete_item(self, items: NamedDependency[ItemService], id: FromPath[UUID]) -> Message:
        """Delete an item."""
        await items.delete(id)
        return Message(message="Item deleted successfully")

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, Parameter

from app.auth import PREFETCH_ITEM
from app.schemas import PAGE_MAX, ItemCreate, ItemPublic, ItemsPublic, ItemUpdate, Message, changes, item_public
from app.services import ItemReads, ItemService, provide_item_service
from db.queries import UserRow

Skip = Annotated[int, Parameter(ge=0, le=PAGE_MAX)]
Limit = Annotated[int, Parameter(ge=0, le=PAGE_MAX)]


class ItemsController(Controller):
    path = "/items"
    tags = ["items"]
    dependencies = {"items": Provide(provide_item_service)}

    @get("/")
    async def read_items(
        self,
        item_reads: NamedDependency[ItemReads],
        skip: Skip = 0,
        limit: Limit = 100,
    ) -> ItemsPublic:
        """Items visible to the caller (all of them for a superuser), newest first."""
        rows, count = await item_reads.list_page(skip, limit)
        return ItemsPublic(data=[item_public(row) for row in rows], count=count)

    @post("/", status_code=200)
    async def create_item(self, item_reads: NamedDependency[ItemReads], data: JSONBody[ItemCreate]) -> ItemPublic:
        """Create an item owned by the caller."""
        return item_public(await item_reads.create(data.title, data.description))

    @get("/{id:str}", opt={PREFETCH_ITEM: "id"})
    async def read_item(self, item_reads: NamedDependency[ItemReads], id: FromPath[UUID]) -> ItemPublic:
        """One item, if the caller owns it or is a superuser."""
        return item_public(await item_reads.read(id))

    @put("/{id:str}")
    async def update_item(
        self,
        items: NamedDependency[ItemService],
        current_user: NamedDependency[UserRow],
        id: FromPath[UUID],
        data: JSONBody[ItemUpdate],
    ) -> ItemPublic:
        """Partial update of title and description."""
        item = await items.get_for_caller(id, current_user)
        return item_public(await items.apply_changes(item, changes(data)))

    @delete("/{id:str}", status_code=200)
    async def delete_item(
        self, items: NamedDependency[ItemService], current_user: NamedDependency[UserRow], id: FromPath[UUID]
    ) -> Message:
        """Delete an item."""
        await items.remove(await items.get_for_caller(id, current_user))
        return Message(message="Item deleted successfully")

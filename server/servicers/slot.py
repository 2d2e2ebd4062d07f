"""SlotService: a slot's mode (apprentice or online), its apprentice report and its mode changes."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from tacit.server import converters
from tacit.server.apprentice import SlotModes, slot_status
from tacit.server.config import Settings
from tacit.server.converters import slot as convert
from tacit.server.errors import NotFound
from tacit.v1 import slot_pb2, slot_pb2_grpc


class SlotServicer(slot_pb2_grpc.SlotServiceServicer):
    def __init__(self, modes: SlotModes, settings: Settings, caller: Callable[[grpc.ServicerContext], str]):
        self._modes = modes
        self._settings = settings
        self._caller = caller

    def _slot(self, name: str) -> str:
        converters.require_text("slot", name, self._settings.limits, converters.SLOT_NAME)
        if name not in self._settings.slots:
            raise NotFound("slot: no slot with this name is configured", "SLOT_NOT_FOUND")
        return name

    def GetSlotStatus(
        self, request: slot_pb2.GetSlotStatusRequest, context: grpc.ServicerContext
    ) -> slot_pb2.GetSlotStatusResponse:  # noqa: N802
        slot = self._slot(request.slot)
        return convert.status_response(slot_status(self._modes.db, self._modes, slot))

    def SetSlotMode(
        self, request: slot_pb2.SetSlotModeRequest, context: grpc.ServicerContext
    ) -> slot_pb2.SetSlotModeResponse:  # noqa: N802
        slot = self._slot(request.slot)
        mode = convert.mode_name(request.mode)
        reason = convert.reason(request.reason) or "on command"
        change = self._modes.set_mode(slot, mode, self._caller(context), reason)
        response = slot_pb2.SetSlotModeResponse(mode=convert.SLOT_MODES[mode], changed=change is not None)
        if change is not None:
            response.change.CopyFrom(convert.change_to_proto(change))
        return response

    def ListSlotModeChanges(
        self, request: slot_pb2.ListSlotModeChangesRequest, context: grpc.ServicerContext
    ) -> slot_pb2.ListSlotModeChangesResponse:  # noqa: N802
        slot = self._slot(request.slot)
        size = convert.page_size(request.page_size)
        changes = self._modes.history(slot, size, convert.before_id(request.page_token))
        return slot_pb2.ListSlotModeChangesResponse(
            changes=[convert.change_to_proto(change) for change in changes],
            next_page_token=convert.page_token(changes, size),
        )

"""EventService: TrackEvents."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from tacit.server import converters
from tacit.server.budget import require_within_budget, scrub_chars
from tacit.server.config import Settings
from tacit.server.errors import InvalidArgument
from tacit.server.events import EventInput, EventRecorder, _payload_kind
from tacit.v1 import event_pb2, event_pb2_grpc


class EventServicer(event_pb2_grpc.EventServiceServicer):
    def __init__(self, recorder: EventRecorder, settings: Settings, known_names: frozenset[str]):
        self._recorder = recorder
        self._settings = settings
        self._known_names = known_names

    def TrackEvents(
        self, request: event_pb2.TrackEventsRequest, context: grpc.ServicerContext
    ) -> event_pb2.TrackEventsResponse:  # noqa: N802
        limits = self._settings.limits
        if not request.events:
            raise InvalidArgument("events", "at least one event is required")
        if len(request.events) > limits.max_events_per_request:
            raise InvalidArgument("events", f"more than {limits.max_events_per_request} events")
        events = []
        for index, event in enumerate(request.events):
            field = f"events[{index}]"
            events.append(
                EventInput(
                    event_id=converters.required_event_id(f"{field}.event_id", event.event_id),
                    subject_id=converters.require_text(f"{field}.subject_id", event.subject_id, limits),
                    event_type=event.event_type,
                    occurred_at=converters.timestamp_or_none(
                        f"{field}.occurred_at", event.occurred_at, event.HasField("occurred_at")
                    )
                    or datetime.now(UTC),
                    properties=converters.features_to_dict(
                        f"{field}.properties", event.properties, limits, self._known_names
                    ),
                )
            )
        boundary = self._recorder.boundary
        require_within_budget(
            "events",
            (scrub_chars(boundary, _payload_kind(e.event_type), e.properties) for e in events),
            limits.max_scrub_chars_per_request,
        )
        result = self._recorder.track(events)
        return event_pb2.TrackEventsResponse(
            accepted=result.accepted,
            duplicates=result.duplicates,
            dropped_property_fields=result.dropped_fields,
        )

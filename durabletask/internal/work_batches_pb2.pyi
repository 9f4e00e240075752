from durabletask.internal import orchestrator_service_pb2 as _orchestrator_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkItemBatch(_message.Message):
    __slots__ = ("workItems",)
    WORKITEMS_FIELD_NUMBER: _ClassVar[int]
    workItems: _containers.RepeatedCompositeFieldContainer[_orchestrator_service_pb2.WorkItem]
    def __init__(self, workItems: _Optional[_Iterable[_Union[_orchestrator_service_pb2.WorkItem, _Mapping]]] = ...) -> None: ...

class ActivityResultBatch(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_orchestrator_service_pb2.ActivityResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[_orchestrator_service_pb2.ActivityResponse, _Mapping]]] = ...) -> None: ...

class OrchestratorResultBatch(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_orchestrator_service_pb2.OrchestratorResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[_orchestrator_service_pb2.OrchestratorResponse, _Mapping]]] = ...) -> None: ...

class CompletionOutcome(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class CompletionOutcomes(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[CompletionOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[CompletionOutcome, _Mapping]]] = ...) -> None: ...

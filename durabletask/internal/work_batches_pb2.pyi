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

class ChannelRequest(_message.Message):
    __slots__ = ("open", "activityResults", "orchestratorResults", "callId", "readsWorkWithOutcomes")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    ACTIVITYRESULTS_FIELD_NUMBER: _ClassVar[int]
    ORCHESTRATORRESULTS_FIELD_NUMBER: _ClassVar[int]
    CALLID_FIELD_NUMBER: _ClassVar[int]
    READSWORKWITHOUTCOMES_FIELD_NUMBER: _ClassVar[int]
    open: _orchestrator_service_pb2.GetWorkItemsRequest
    activityResults: ActivityResultBatch
    orchestratorResults: OrchestratorResultBatch
    callId: int
    readsWorkWithOutcomes: bool
    def __init__(self, open: _Optional[_Union[_orchestrator_service_pb2.GetWorkItemsRequest, _Mapping]] = ..., activityResults: _Optional[_Union[ActivityResultBatch, _Mapping]] = ..., orchestratorResults: _Optional[_Union[OrchestratorResultBatch, _Mapping]] = ..., callId: _Optional[int] = ..., readsWorkWithOutcomes: _Optional[bool] = ...) -> None: ...

class ChannelReply(_message.Message):
    __slots__ = ("workItems", "outcomes", "callId", "maxMessageBytes", "readyWork")
    WORKITEMS_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    CALLID_FIELD_NUMBER: _ClassVar[int]
    MAXMESSAGEBYTES_FIELD_NUMBER: _ClassVar[int]
    READYWORK_FIELD_NUMBER: _ClassVar[int]
    workItems: WorkItemBatch
    outcomes: CompletionOutcomes
    callId: int
    maxMessageBytes: int
    readyWork: WorkItemBatch
    def __init__(self, workItems: _Optional[_Union[WorkItemBatch, _Mapping]] = ..., outcomes: _Optional[_Union[CompletionOutcomes, _Mapping]] = ..., callId: _Optional[int] = ..., maxMessageBytes: _Optional[int] = ..., readyWork: _Optional[_Union[WorkItemBatch, _Mapping]] = ...) -> None: ...

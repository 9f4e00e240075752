"""Version filters outside the store: the dispatcher's work-item filters and the query version header."""

from __future__ import annotations

import pytest

from durabletask.internal import orchestrator_service_pb2 as pb
from sidecar.servicer_util import QUERY_VERSIONS_HEADER, BadRequest, query_versions
from sidecar.work_streams import declared_names as _declared_names
from sidecar.work_streams import declared_versions as _declared_versions


def test_filters_in_a_stream_request() -> None:
    no_filters = pb.GetWorkItemsRequest()
    assert _declared_names(no_filters, []) is None  # no filters: every name
    filters = pb.WorkItemFilters(orchestrations=[
        pb.OrchestrationFilter(name="a", versions=["1"]),
        pb.OrchestrationFilter(name="a", versions=["2"]),
        pb.OrchestrationFilter(name="b", versions=["1"]),
        pb.OrchestrationFilter(name="b"),
        pb.OrchestrationFilter(name="c"),
    ])
    request = pb.GetWorkItemsRequest(workItemFilters=filters)
    assert _declared_names(request, list(filters.orchestrations)) == {"a", "b", "c"}
    assert _declared_names(request, list(filters.activities)) == frozenset()  # declared none: gets none
    assert _declared_versions(list(filters.orchestrations)) == {"a": {"1", "2"}}  # b: one filter takes any


def test_query_versions_header() -> None:
    assert query_versions(None) == []
    assert query_versions((("other", "x"),)) == []
    assert query_versions(((QUERY_VERSIONS_HEADER, '["1.0", ""]'),)) == ["1.0", ""]
    for bad in ('"1.0"', "[1]", "{", '{"a": 1}'):
        with pytest.raises(BadRequest, match=QUERY_VERSIONS_HEADER):
            query_versions(((QUERY_VERSIONS_HEADER, bad),))

"""Batch jobs are traced as chat requests are: each stored item of a job run by a real
`orchestrator serve` arrives at a real OTLP/HTTP receiver as its own trace, under the item's
trace id (the results' `request_id`)."""

from __future__ import annotations

import time

import httpx

from conftest import POOL3, mmlu_questions
from otlp_sink import OtlpSink
from security.served import Served


def test_each_batch_item_becomes_a_trace(tmp_path) -> None:  # type: ignore[no-untyped-def]
    qs = mmlu_questions(3, offset=6)
    reqs = [{"custom_id": f"q{i}", "body": {"model": "all-vote" if i % 2 else POOL3[0], "messages": [{"role": "user", "content": q.text}],
                                             "metadata": {"question_id": q.question_id}}} for i, q in enumerate(qs)]
    with OtlpSink() as sink:
        with Served(tmp_path, env={"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}) as served:
            b = httpx.post(f"{served.url}/v1/batches", json={"requests": reqs}).json()
            deadline = time.monotonic() + 60
            while (status := httpx.get(f"{served.url}/v1/batches/{b['id']}").json()["status"]) == "in_progress":
                assert time.monotonic() < deadline, "the batch did not finish in 60 s"
                time.sleep(0.1)
            assert status == "completed"
            results = httpx.get(f"{served.url}/v1/batches/{b['id']}/results").json()["data"]
            ids = [r["response"]["request_id"] for r in results]
            spans = sink.wait_for(lambda got: {s.attributes.get("orchestrator.trace_id") for s in got} >= set(ids))
    roots = {s.attributes["orchestrator.trace_id"]: s for s in spans if s.name.startswith("invoke_workflow")}
    assert [roots[i].attributes["orchestrator.router"] for i in ids] == ["single", "all-vote", "single"]
    voted = roots[ids[1]]
    calls = [s for s in spans if s.trace_id == voted.trace_id and s.attributes["gen_ai.operation.name"] == "chat"]
    assert sorted(s.attributes["gen_ai.request.model"] for s in calls) == sorted(POOL3)
    assert all(s.parent_id == voted.span_id for s in calls)

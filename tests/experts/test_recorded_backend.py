import pytest

from conftest import RECORDED
from experts import ConfigError, ExpertSpec, GenerationRequest, RecordedBackend, RecordedLibrary


async def test_replays_the_recorded_row_and_refuses_unknown_questions() -> None:
    b = RecordedBackend(ExpertSpec(name="yi", backend="recorded", path=str(RECORDED), model="Yi-34B"))
    qid = next(iter(b.rows()))
    row = b.rows()[qid]
    ok, missing, no_id = await b.generate(
        [GenerationRequest.chat("q", question_id=qid), GenerationRequest.chat("q", question_id="999999"), GenerationRequest.chat("q")]
    )
    assert ok.text == row.response and ok.answer == row.pred and ok.tokens_estimated
    assert missing.error.kind == "unknown_question" and "999999" in missing.error.message
    assert no_id.error.kind == "unknown_question"
    assert (await b.health()).healthy


def test_missing_model_file_lists_available_models() -> None:
    with pytest.raises(ConfigError, match="available: .*Yi-34B"):
        RecordedLibrary().table(RECORDED, "No-Such-Model")

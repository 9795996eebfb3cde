"""Fuzzing the corpus loader: whatever bytes a bench file holds, the answer is a loaded bench or
a CorpusError naming the file, never another exception.

    python -m pytest tests/test_corpus_fuzz.py -q
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from navi_model.assets import corpus_dir
from navi_model.corpus.load import CorpusError, load_bench, load_intents

INTENTS = load_intents(corpus_dir())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
bench_like = st.fixed_dictionaries(
    {},
    optional={"kind": st.sampled_from(["policy", "paraphrase", "plan", "gallery", "other"]) | json_values,
              "goal": st.text(max_size=30) | json_values, "intent": st.sampled_from(["build", "train", "nope"]) | json_values,
              "plan": st.lists(st.sampled_from(["build", "train", "greet", "x"]), max_size=3) | json_values,
              "prompt": st.text(max_size=20) | json_values, "reference": st.text(max_size=20) | json_values,
              "memory": json_values},
)
settings_ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def load_or_error(path):
    try:
        return load_bench(path, INTENTS)
    except CorpusError as e:
        assert str(path) in str(e)
        return None


@settings_
@given(raw=st.binary(max_size=300))
def test_any_bytes(tmp_path, raw):
    path = tmp_path / "bench.jsonl"
    path.write_bytes(raw)
    bench = load_or_error(path)  # anything but a bench or a CorpusError naming the file escapes and fails
    assert bench is None or bench.items


@settings_
@given(rows=st.lists(bench_like, min_size=1, max_size=4))
def test_any_json_objects(tmp_path, rows):
    path = tmp_path / "bench.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    bench = load_or_error(path)
    if bench is not None:  # what loads is well-formed
        assert bench.kind in ("policy", "paraphrase", "plan", "gallery")
        for it in bench.items:
            if bench.kind == "plan":
                assert all(step not in ("train", "eval", "greet", "help") for step in it["plan"])

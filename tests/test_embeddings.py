"""The sentence embedder (the real MiniLM): a text embedded twice in a row is encoded once, with the same vector."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_a_single_text_is_encoded_once_and_its_vector_is_unchanged():
    from agent.build import load_embedder
    from agent.config import Settings

    embedder = load_embedder(Settings.from_env())
    calls = []
    encode = embedder.model.encode
    embedder.model.encode = lambda texts, **kw: calls.append(list(texts)) or encode(texts, **kw)
    first = embedder.embed(["sounds good, I'll check it out"])
    first[0, 0] += 1.0  # a caller's change does not reach the kept vector
    again = embedder.embed(["sounds good, I'll check it out"])
    assert calls == [["sounds good, I'll check it out"]]
    assert again.shape == (1, embedder.dimension) and again.dtype == np.float32
    assert np.array_equal(again, encode(["sounds good, I'll check it out"], normalize_embeddings=True,
                                        convert_to_numpy=True).astype(np.float32))

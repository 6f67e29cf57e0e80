from hypothesis import given, settings
from hypothesis import strategies as st

from qa.ingest.chunk import ChunkConfig, chunk, paragraph_spans, sentence_spans, title_prefix
from qa.ingest.articles import read_file

from .conftest import SEEDS, FakeEmbedder

count = FakeEmbedder().count_tokens

words = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FFF, blacklist_categories=("Cs",)), min_size=1, max_size=12)
sentences = st.lists(words, min_size=1, max_size=40).map(lambda ws: " ".join(ws) + ".")
paragraphs = st.lists(sentences, min_size=1, max_size=12).map(" ".join)
texts = st.one_of(
    st.lists(paragraphs, min_size=1, max_size=8).map("\n\n".join),
    st.text(min_size=1, max_size=3000),
)


@settings(max_examples=150, deadline=None)
@given(text=texts, title=st.text(max_size=40), budget=st.sampled_from([32, 64, 256]))
def test_every_passage_slices_back_and_fits(text, title, budget):
    cfg = ChunkConfig(max_tokens=budget, stride_tokens=budget // 2)
    passages = chunk(text, title, count, cfg)
    for p in passages:
        assert text[p.start:p.end] == p.text
        assert p.text and p.text == p.text.strip()
        assert count([title_prefix(title) + p.text])[0] <= budget or len(p.text.split()) <= 1
    # Nothing is lost: every word of the text is inside some passage.
    covered = set()
    for p in passages:
        covered.update(range(p.start, p.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


@given(text=texts)
def test_sentence_and_paragraph_spans_are_exact(text):
    for a, b in paragraph_spans(text):
        assert text[a:b].strip() == text[a:b]
        for s, e in sentence_spans(text, a, b):
            assert a <= s < e <= b
            assert text[s:e].strip() == text[s:e]


def test_seed_passages_fit_and_keep_paragraphs():
    art = next(read_file(SEEDS / "004_fc6aece6c7f21e80.txt"))
    passages = chunk(art.text, art.title, count)
    assert len(passages) > 3
    assert passages[0].start == 0 and passages[-1].end == len(art.text)
    for p in passages:
        assert art.text[p.start:p.end] == p.text
        assert count([title_prefix(art.title) + p.text])[0] <= 256


def test_real_tokenizer_counts_match_the_summed_sentence_counts(monkeypatch):
    """The chunker adds up per-sentence counts instead of re-tokenizing each window; check it against the real tokenizer."""
    from qa.ingest import chunk as chunk_mod
    from qa.embed.model import get_embedder

    real = get_embedder(backend="onnx-int8").count_tokens
    seen = []
    fit = chunk_mod._fit

    def spy(passages, text, title, count, max_tokens, known=None):
        seen.extend(zip(passages, known or [None] * len(passages), [title] * len(passages)))
        return fit(passages, text, title, count, max_tokens, known)

    monkeypatch.setattr(chunk_mod, "_fit", spy)
    for path in sorted(SEEDS.iterdir()):
        for art in read_file(path):
            for p in chunk(art.text, art.title, real):
                assert real([title_prefix(art.title) + p.text])[0] <= 256
    assert seen and any(n is not None for _, n, _ in seen)
    for p, n, title in seen:
        if n is not None:
            assert n == real([title_prefix(title) + p.text])[0]

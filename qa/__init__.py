"""Question-answering search over news articles: cited passages, never generated text.

The stages, in the order an article flows: qa.ingest (read, clean, chunk) -> qa.embed (the model)
-> qa.index (segments and SQLite) -> qa.search (candidates, the answer) -> qa.web (API and pages).
"""

__version__ = "0.1.0"

"""The search stage: hybrid candidates, fusion, wire copies collapsed, the answer, and how it is measured.

searcher (Searcher.ask) · answer (the answer sentence and its confidence) · filters (source and date) ·
snippets (what the page and `qa ask` show) · evaluate (qa eval's figures).
"""

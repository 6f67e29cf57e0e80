"""The ingest stage: read files and web pages into clean articles, cut them into passages, embed and store them.

articles (reading, decoding, cleaning, ids) · fetch (pages, feeds, sitemaps) · chunk (passages) ·
sentences (passage vectors from sentence vectors) · pipeline (articles -> the index) · cluster (the same on Ray) ·
squad (SQuAD files for evaluation).
"""

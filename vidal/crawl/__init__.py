"""The crawl as a library: search terms (their sources and POS tagging), yt-dlp search, text
filters, downloads, rate limits, and the Freesound API (audio-text pairs).

Nothing here imports Ray (the Ray-backed rate limiter imports it lazily, when a runner asks for
it); `vidal/stages/search.py` and `vidal/stages/download.py` wrap these functions as stages and
`vidal/run/crawl.py` composes them into the `vidal crawl` job (`vidal/stages/freesound.py` and
`vidal/run/crawl_freesound.py` likewise for `vidal crawl --source freesound`).
"""

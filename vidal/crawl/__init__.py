"""The crawl as a library: search terms, yt-dlp search, text filters, downloads, rate limits.

Nothing here imports Ray (the Ray-backed rate limiter imports it lazily, when a runner asks for
it); `vidal/stages/search.py` and `vidal/stages/download.py` wrap these functions as stages and
`vidal/run/crawl.py` composes them into the `vidal crawl` job.
"""

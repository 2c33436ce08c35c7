"""The offline POS tagger's accuracy on the noun / verb / other split, measured on a small
hand-tagged sample of phrases like the term sources' labels and captions (N = noun, V = verb,
O = anything else; auxiliaries count as verbs, as Penn tags them)."""

from __future__ import annotations

from vidal.crawl.pos import NOUN, OTHER, VERB, english_tagger

GOLD = """
a/O man/N is/V riding/V a/O horse/N on/O the/O beach/N
people/N are/V cooking/V pizza/N in/O the/O kitchen/N
how/O to/O play/V chess/N
how/O to/O make/V a/O delicious/O chocolate/N cake/N
learn/V to/O dance/V salsa/N in/O 10/O easy/O steps/N
a/O dog/N runs/V across/O the/O grass/N
two/O children/N play/V football/N in/O a/O park/N
a/O woman/N is/V slicing/V tomatoes/N on/O a/O cutting/N board/N
a/O cat/N sleeping/V on/O a/O sofa/N
a/O group/N of/O people/N standing/V next/O to/O a/O bus/N
the/O girl/N is/V singing/V a/O song/N
a/O person/N is/V driving/V a/O car/N down/O the/O road/N
a/O bird/N flies/V over/O the/O lake/N
someone/O is/V pouring/V water/N into/O a/O glass/N
a/O boy/N throws/V a/O ball/N to/O his/O father/N
the/O chef/N stirs/V the/O soup/N
a/O train/N arrives/V at/O the/O station/N
men/N are/V fighting/V in/O a/O ring/N
a/O plate/N of/O food/N with/O broccoli/N and/O rice/N
a/O skier/N goes/V down/O a/O snowy/O hill/N
giant/O panda/N ,/O panda/N ,/O panda/N bear/N
killer/O whale/N ,/O orca/N
brush/V hair/N
ride/V bike/N
shoot/V ball/N
fall/V floor/N
answer/V phone/N
sit/V
stand/V
walk/V
open/V a/O door/N
hand/V clap/N
a/O man/N is/V talking/V about/O his/O new/O phone/N
a/O video/N game/N character/N jumps/V over/O a/O wall/N
a/O red/O car/N is/V parked/V on/O the/O street/N
a/O baby/N laughs/V while/O eating/V a/O banana/N
the/O surfer/N rides/V a/O big/O wave/N
a/O man/N repairs/V a/O bicycle/N in/O his/O garage/N
how/O to/O tie/V a/O tie/N
students/N are/V writing/V notes/N in/O a/O classroom/N
"""


def _gold():
    for line in GOLD.strip().splitlines():
        pairs = [t.rsplit("/", 1) for t in line.split()]
        yield (
            " ".join(w for w, _ in pairs),
            [{"N": NOUN, "V": VERB, "O": OTHER}[k] for _, k in pairs],
        )


def test_noun_verb_accuracy_on_the_tagged_sample():
    tagger = english_tagger()
    from vidal.crawl.pos import coarse

    right = total = 0
    nouns_verbs_right = nouns_verbs = 0
    for text, gold in _gold():
        tagged = tagger.tag(text)
        assert [w for w, _ in tagged] == text.split(), text  # tokens line up with the sample
        for (_, tag), want in zip(tagged, gold, strict=True):
            got = coarse(tag)
            right += got == want
            total += 1
            if want != OTHER:
                nouns_verbs += 1
                nouns_verbs_right += got == want
    accuracy, keyword_accuracy = right / total, nouns_verbs_right / nouns_verbs
    print(
        f"noun/verb/other accuracy {accuracy:.3f} on {total} tokens; "
        f"on the {nouns_verbs} nouns and verbs {keyword_accuracy:.3f}"
    )
    assert total > 200
    assert accuracy >= 0.9 and keyword_accuracy >= 0.85


def test_keywords_are_lowercase_nouns_and_verbs_without_auxiliaries():
    tagger = english_tagger()
    assert tagger.keywords("How to play chess.") == [("play", VERB), ("chess", NOUN)]
    assert ("is", VERB) not in tagger.keywords("a man is riding a horse")
    assert tagger.keywords("") == [] and tagger.keywords("!!! 42") == []


def test_many_processes_tag_like_one():
    from vidal.crawl.pos import keywords_many

    texts = [
        line.replace("/N", "").replace("/V", "").replace("/O", "") for line in GOLD.split("\n")
    ]
    texts = [t for t in texts if t.strip()] * 4
    assert keywords_many(texts, workers=2, chunk=40) == keywords_many(texts, workers=1)

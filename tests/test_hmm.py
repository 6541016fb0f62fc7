"""HMM topologies, word models and hybrid HMM/NN scoring against brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import oracle
import pytest
import torch

from gtn_py import InvalidGraphError, LabelError, losses, string_graph
from gtn_py.criteria.hmm import (
    NEXT,
    SKIP,
    STAY,
    decoding_graph,
    forced_align,
    hmm_decode,
    hmm_lattice,
    hmm_nll,
    hmm_score,
    hmm_topology,
    hmm_units,
    lexicon,
    transcript_graphs,
    word_model,
)


def allowed(sequence, num_states, self_loops, skips):
    """Left-to-right rule: start in state 0, stay / advance / skip one, leave from the last
    state (or the last but one with skips). Returns the transition score sum or None."""
    if not sequence or sequence[0] != 0:
        return None
    moves = []
    for a, b in zip(sequence, sequence[1:]):
        step = b - a
        if step == 0 and self_loops:
            moves.append((a, STAY))
        elif step == 1:
            moves.append((a, NEXT))
        elif step == 2 and skips:
            moves.append((a, SKIP))
        else:
            return None
    last = sequence[-1]
    if last == num_states - 1:
        moves.append((last, NEXT))
    elif skips and last == num_states - 2:
        moves.append((last, SKIP))
    else:
        return None
    return moves


@pytest.mark.parametrize("num_states,self_loops,skips", [(1, True, False), (3, True, False), (3, False, False),
                                                         (4, True, True), (3, False, True)])
def test_topology_accepts_left_to_right_state_sequences(num_states, self_loops, skips) -> None:
    torch.manual_seed(0)
    scores = torch.randn(num_states, 3, dtype=torch.float64)
    g = hmm_topology(num_states, self_loops, skips, scores, first_label=5)
    got = oracle.relation(g, max_arcs=6)
    want = {}
    for length in range(1, 7):
        for seq in itertools.product(range(num_states), repeat=length):
            moves = allowed(list(seq), num_states, self_loops, skips)
            if moves is not None:
                labels = tuple(s + 5 for s in seq)
                want[(labels, labels)] = sum(float(scores[s, m]) for s, m in moves)
    oracle.assert_relations_close(got, want, tol=1e-9)


def brute_paths(g, emissions, length):
    """(score, states, words) of every path of exactly ``length`` arcs (state label k reads
    emission column k - 1)."""
    scored = []
    for path, score in oracle.paths(g, max_arcs=length):
        if len(path) != length:
            continue
        states = [int(g.ilabel[a]) - 1 for a in path]
        words = [int(g.olabel[a]) for a in path if int(g.olabel[a]) != 0]
        scored.append((score + sum(float(emissions[t, k]) for t, k in enumerate(states)), states, words))
    return scored


def brute_hmm(g, emissions, length):
    """Log total, best score, best state sequence and its words over the paths of exactly
    ``length`` arcs."""
    scored = brute_paths(g, emissions, length)
    if not scored:
        return -math.inf, -math.inf, None, None
    best = max(scored, key=lambda x: x[0])
    return oracle.logsumexp([s for s, _, _ in scored]), best[0], best[1], best[2]


def small_model(dtype=torch.float64):
    torch.manual_seed(3)
    scores = torch.randn(3, 2, 3, dtype=dtype).log_softmax(-1)
    units = hmm_units(3, 2, transition_scores=scores, dtype=dtype)
    lex = lexicon({1: [0], 2: [1, 2], 3: [2]}, units)  # unambiguous: no ties between word sequences
    return units, lex, scores


def test_scores_decoding_and_alignment_against_brute_force() -> None:
    _, lex, _ = small_model()
    graph = decoding_graph(lex)
    assert not bool((graph.ilabel == 0).any())
    torch.manual_seed(4)
    emissions = torch.randn(3, 5, 6, dtype=torch.float64).log_softmax(-1)
    lengths = torch.tensor([5, 3, 4])
    totals = hmm_score(graph, emissions, lengths)
    best = hmm_decode(graph, emissions, lengths)
    transcripts = [[2], [1, 3], [3, 3]]
    targets = transcript_graphs(lex, transcripts)
    aligned = forced_align(lex, transcripts, emissions, lengths)
    nll = hmm_nll(targets, emissions, lengths, reduction="none")
    for b in range(3):
        length = int(lengths[b])
        want_total, want_best, want_states, want_words = brute_hmm(graph, emissions[b], length)
        assert float(totals[b]) == pytest.approx(want_total)
        assert float(best.scores[b]) == pytest.approx(want_best)
        assert best.states[b, :length].tolist() == want_states and best.words[b] == want_words
        assert torch.all(best.states[b, length:] == -1)
        target = targets[b]
        want_total, want_best, want_states, want_words = brute_hmm(target, emissions[b], length)
        assert float(nll[b]) == pytest.approx(-want_total)
        if want_states is None:
            assert float(aligned.scores[b]) == -math.inf
        else:
            assert aligned.states[b, :length].tolist() == want_states
            assert aligned.words[b] == transcripts[b] == want_words


def test_grammar_restricts_word_sequences() -> None:
    _, lex, _ = small_model()
    grammar = string_graph([3, 1], dtype=torch.float64)  # only "3 1"
    graph = decoding_graph(lex, grammar)
    emissions = torch.randn(1, 6, 6, dtype=torch.float64)
    assert hmm_decode(graph, emissions).words == [[3, 1]]
    assert torch.allclose(hmm_score(graph, emissions), hmm_score(transcript_graphs(lex, [[3, 1]]), emissions))


def test_discriminative_losses_over_lattices() -> None:
    """MMI over the transcription and decoding lattices is the difference of forward scores;
    the most offending incorrect answer is the best decoding whose words differ."""
    _, lex, _ = small_model()
    torch.manual_seed(6)
    emissions = torch.randn(2, 6, 6, dtype=torch.float64, requires_grad=True)
    transcripts = [[2, 1], [3]]
    targets, graph = transcript_graphs(lex, transcripts), decoding_graph(lex)
    correct = hmm_lattice(targets, emissions)
    everything = hmm_lattice(graph, emissions)
    mmi = losses.mmi(correct, everything, reduction="none")
    want = hmm_score(graph, emissions) - hmm_score(targets, emissions)
    assert torch.allclose(mmi, want)
    offending = losses.most_offending_incorrect(correct, everything)
    for b in range(2):
        brute = [(s, w) for s, _, w in brute_paths(graph, emissions[b].detach(), 6) if w != transcripts[b]]
        best_score, best_words = max(brute, key=lambda x: x[0])
        assert float(offending.energies[b].detach()) == pytest.approx(-best_score)
        assert offending.strings[b] == best_words
    losses.hinge(correct, everything).backward()
    assert emissions.grad is not None and torch.isfinite(emissions.grad).all()


def test_gradcheck_emissions_and_transitions() -> None:
    torch.manual_seed(5)
    emissions = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    transitions = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)

    def loss(e, t):
        lex = lexicon([[0], [0, 1]], hmm_units(2, 2, skips=True, transition_scores=t, dtype=torch.float64))
        return hmm_nll(transcript_graphs(lex, [[2], [1, 1]]), e, reduction="sum")

    assert torch.autograd.gradcheck(loss, (emissions, transitions))


def test_bad_input() -> None:
    units = hmm_units(2, 2)
    with pytest.raises(InvalidGraphError, match="unit 5"):
        word_model([5], units, 1)
    with pytest.raises(LabelError, match="word labels"):
        word_model([0], units, 0)
    with pytest.raises(InvalidGraphError, match="transition_scores"):
        hmm_topology(3, transition_scores=torch.zeros(2, 3))
    with pytest.raises(LabelError, match="reads epsilon"):
        hmm_score(lexicon([[0]], units), torch.zeros(1, 3, 4))  # epsilons not removed
    looped = hmm_topology(2)
    looped.add_arc(1, 0, 1)
    with pytest.raises(InvalidGraphError, match="enters start node"):
        word_model([0], [looped], 1)


def synthetic_speech(num_utterances, means, generator):
    """Utterances of 1-2 words from a 3-word vocabulary over 3 units of 2 states; every state
    lasts 1-3 frames and emits its mean plus noise. Returns features, lengths, transcripts,
    true states."""
    pronunciations = {1: [0, 1], 2: [1, 2], 3: [2, 0]}
    features, states, transcripts = [], [], []
    for _ in range(num_utterances):
        words = torch.randint(1, 4, (int(torch.randint(1, 3, (1,), generator=generator)),), generator=generator)
        seq = []
        for w in words.tolist():
            for unit in pronunciations[w]:
                for s in range(2):
                    seq += [unit * 2 + s] * int(torch.randint(1, 4, (1,), generator=generator))
        transcripts.append(words.tolist())
        states.append(torch.tensor(seq))
        features.append(means[torch.tensor(seq)] + 0.5 * torch.randn(len(seq), means.shape[1], generator=generator))
    lengths = torch.tensor([len(s) for s in states])
    padded = torch.zeros(num_utterances, int(lengths.max()), means.shape[1])
    true_states = torch.full((num_utterances, int(lengths.max())), -1)
    for b in range(num_utterances):
        padded[b, : lengths[b]] = features[b]
        true_states[b, : lengths[b]] = states[b]
    return padded, lengths, transcripts, true_states, pronunciations


def test_hybrid_learns_from_transcriptions_only() -> None:
    """Embedded training: the network learns its states from word transcriptions through the
    forward algorithm (no frame labels), then decodes and aligns unseen utterances."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    means = torch.randn(6, 8, generator=generator) * 1.5
    x, lengths, transcripts, _, pronunciations = synthetic_speech(48, means, generator)
    x_test, lengths_test, transcripts_test, states_test, _ = synthetic_speech(32, means, generator)
    units = hmm_units(3, 2)
    lex = lexicon(pronunciations, units)
    targets = transcript_graphs(lex, transcripts)
    network = torch.nn.Linear(8, 6)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.05)
    for _ in range(40):
        optimizer.zero_grad()
        loss = hmm_nll(targets, network(x).log_softmax(-1), lengths)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        emissions = network(x_test).log_softmax(-1)
        decoded = hmm_decode(decoding_graph(lex), emissions, lengths_test)
        aligned = forced_align(lex, transcripts_test, emissions, lengths_test)
    sentence_accuracy = sum(d == t for d, t in zip(decoded.words, transcripts_test)) / len(transcripts_test)
    inside = states_test >= 0
    frame_accuracy = float((aligned.states[inside] == states_test[inside]).float().mean())
    assert sentence_accuracy >= 0.9, sentence_accuracy
    assert frame_accuracy >= 0.9, frame_accuracy


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda() -> None:
    _, lex, _ = small_model()
    emissions = torch.randn(2, 5, 6, dtype=torch.float64)
    graph = decoding_graph(lex)
    cpu = hmm_score(graph, emissions)
    gpu = hmm_score(graph.to("cuda"), emissions.cuda())
    assert torch.allclose(gpu.cpu(), cpu)
    assert hmm_decode(graph.to("cuda"), emissions.cuda()).words == hmm_decode(graph, emissions).words

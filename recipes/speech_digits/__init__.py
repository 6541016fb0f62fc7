"""Connected spoken digits: a synthesised corpus, a CMU-Sphinx-compatible front end, and three
recognisers trained through gtn_py graphs.

Modules: synth (corpus synthesis with espeak-ng, flite and sox), frontend (MFCC matching sphinx_fe),
mfc (Sphinx .mfc feature files), data (directories of WAV/.mfc files, CMN, transcripts), models (the
encoder, the CTC model, the Recognizer interface), hybrid (HMM/NN hybrid, forced alignment, isolated
words), templates (DTW elastic templates), train, evaluate (WER/SER, alignment report).
Command line: ``python -m recipes.speech_digits prepare|train|evaluate|decode``.
"""

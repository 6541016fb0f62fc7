"""Connected spoken digits: a synthesised corpus and a CMU-Sphinx-compatible front end.

Modules: synth (corpus synthesis with espeak-ng, flite and sox), frontend (MFCC matching sphinx_fe),
mfc (Sphinx .mfc feature files), data (directories of WAV/.mfc files, CMN, transcripts).
Command line: ``python -m recipes.speech_digits prepare``.
"""

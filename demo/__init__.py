"""The embedded demo: a small real-speech corpus (FSDD), generated noise and RIRs, a random tiny WavLM."""

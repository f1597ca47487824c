"""The method without Ray or storage layout: backbones, LNAMD, mutual scoring, RsCIN, MuSc, PatchEAD, maps."""

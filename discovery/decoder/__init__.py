"""Score-based structure decoder (Sultanov et al.; SMLD, Song & Ermon): space group + composition (+ lattice
hint) → 3-D structures with exactly that space group. Public API: :class:`ScoreDecoder`, :class:`DecoderError`."""

from discovery.decoder.langevin import SamplerSettings
from discovery.decoder.score_decoder import SHIPPED_CHECKPOINT, ScoreDecoder, check_structure
from discovery.decoder.wyckoff import DecoderError

__all__ = ["SHIPPED_CHECKPOINT", "DecoderError", "SamplerSettings", "ScoreDecoder", "check_structure"]

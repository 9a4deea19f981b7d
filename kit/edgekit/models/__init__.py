"""nn.Modules built from an ArchSpec."""
from .model import EncoderOutput, SpeechEncoder, build_model

__all__ = ["EncoderOutput", "SpeechEncoder", "build_model"]

"""Text: tokenizers (byte-level, BPE trained offline, any tokenizer.json), corpus
ingestion into token shards, and language-model pretraining evaluated in bits per
byte. Importing this package registers the task name ``text_pretrain``."""
from .. import register_task
from .pretrain import TextPretrain, TextPretrainConfig, bits_per_byte

register_task(TextPretrain)

__all__ = ["TextPretrain", "TextPretrainConfig", "bits_per_byte"]

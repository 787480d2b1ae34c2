"""Data: samples of mixed media -> model-ready batches (processor, collator, a manifest dataset, tokenizers)."""

from omnikit.data.dataset import MediaDataset
from omnikit.data.processor import EncodedSample, OmniBatch, OmniProcessor, SampleTooLongError
from omnikit.data.samples import MARKERS, LoadedSample, MediaFileError, Sample, as_sample, load_sample
from omnikit.data.thinker_processor import ThinkerBatch, ThinkerProcessor
from omnikit.data.tokenizer import ByteTokenizer, Tokenize, as_tokenizer

__all__ = [
    "MARKERS",
    "ByteTokenizer",
    "EncodedSample",
    "LoadedSample",
    "MediaDataset",
    "MediaFileError",
    "OmniBatch",
    "OmniProcessor",
    "Sample",
    "SampleTooLongError",
    "ThinkerBatch",
    "ThinkerProcessor",
    "Tokenize",
    "as_sample",
    "as_tokenizer",
    "load_sample",
]

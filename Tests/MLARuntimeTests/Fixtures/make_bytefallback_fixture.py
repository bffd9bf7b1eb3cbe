"""Builds a small SentencePiece-style BPE tokenizer with byte fallback (the layout of Llama-2 / Mistral
tokenizer.json files: Prepend + Replace normalizer, no pre-tokenizer, <0xXX> byte tokens) using the
reference Hugging Face `tokenizers` library, and records its encodings of a few strings as the golden
output for the Swift tokenizer. Run: pip install tokenizers && python3 make_bytefallback_fixture.py
"""
import json
from tokenizers import Tokenizer, models, normalizers, decoders

texts = ["Hello world", "hello  the world!", "naïve café €5\nnew line", "the theme thereof", "  leading"]
corpus = ["hello world the theme there thereof hello the world"] * 50

tok = Tokenizer(models.BPE(byte_fallback=True, unk_token=None, fuse_unk=False))
tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
from tokenizers import trainers
trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)],
                              initial_alphabet=["▁"], show_progress=False)
tok.train_from_iterator([c.replace(" ", "▁") for c in corpus], trainer)
tok.save("bytefallback_tokenizer.json")
expected = [{"text": t, "ids": tok.encode(t).ids, "decoded": tok.decode(tok.encode(t).ids)} for t in texts]
json.dump(expected, open("bytefallback_expected.json", "w"), ensure_ascii=False, indent=1)
print(expected)

import MLACheckpoint

extension BPETokenizer {
    /// This tokenizer as GGUF `tokenizer.ggml.*` data (model "gpt2", the pre-tokenizer under the name
    /// llama.cpp knows it by, special tokens typed control (3), all others normal (1)), for a GGUF written
    /// from a Hugging Face source. Throws for byte-fallback (SentencePiece-style) tokenizers, which GGUF
    /// stores as model "llama" with scores this toolkit does not carry.
    public func ggufTokenizerData(chatTemplate: String?, source: String) throws -> GGUFTokenizerData {
        guard mode == .byteLevel else {
            throw TokenizerError.unsupported(source: source, what: "byte-fallback (SentencePiece-style) BPE cannot be written to GGUF here; convert from a GGUF source, whose tokenizer is copied")
        }
        var types = [Int32](repeating: 1, count: tokens.count)
        for id in specialTokens.values where id < types.count { types[id] = 3 }
        return GGUFTokenizerData(model: "gpt2", pre: preTokenizer.rawValue, tokens: tokens, merges: merges, tokenTypes: types,
                                 bosTokenId: bosTokenId, eosTokenId: eosTokenId, unknownTokenId: unknownTokenId, paddingTokenId: nil,
                                 addBosToken: addsBosByDefault, addEosToken: false, chatTemplate: chatTemplate)
    }

    /// The GGUF tokenizer of a model converted from the Hugging Face checkpoint `source`: its tokenizer.json,
    /// with the chat template of tokenizer_config.json. (A GGUF source's `tokenizer.*` keys are copied as they are.)
    public static func ggufTokenizerData(for source: Checkpoint) throws -> GGUFTokenizerData {
        let config = source.auxiliaryFiles["tokenizer_config.json"].flatMap { try? JSONValue.parse($0) }
        return try forCheckpoint(source).ggufTokenizerData(chatTemplate: config?["chat_template"]?.string, source: source.path)
    }
}

/// The `tokenizer.*` metadata of a GGUF file (docs/formats.md "Tokenizer keys"), the inverse of
/// `GGUFFile.tokenizerData()`.
extension GGUFTokenizerData {
    /// The keys in llama.cpp's order: model, pre-tokenizer, tokens, token types, merges, special ids,
    /// BOS/EOS policy, chat template. Absent optional fields are left out.
    public var ggufMetadata: [(String, GGUFValue)] {
        var keys: [(String, GGUFValue)] = [("tokenizer.ggml.model", .string(model))]
        if let pre { keys.append(("tokenizer.ggml.pre", .string(pre))) }
        keys.append(("tokenizer.ggml.tokens", .array(tokens.map { .string($0) })))
        if !tokenTypes.isEmpty { keys.append(("tokenizer.ggml.token_type", .array(tokenTypes.map { .int32($0) }))) }
        if !merges.isEmpty { keys.append(("tokenizer.ggml.merges", .array(merges.map { .string($0) }))) }
        for (key, id) in [("bos_token_id", bosTokenId), ("eos_token_id", eosTokenId), ("unknown_token_id", unknownTokenId),
                          ("padding_token_id", paddingTokenId)] {
            if let id { keys.append(("tokenizer.ggml." + key, .uint32(UInt32(id)))) }
        }
        keys.append(("tokenizer.ggml.add_bos_token", .bool(addBosToken)))
        keys.append(("tokenizer.ggml.add_eos_token", .bool(addEosToken)))
        if let chatTemplate { keys.append(("tokenizer.chat_template", .string(chatTemplate))) }
        return keys
    }
}

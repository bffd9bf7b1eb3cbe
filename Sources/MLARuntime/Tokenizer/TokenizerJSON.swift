import Foundation
import MLACheckpoint
import MLATensor

/// Hugging Face `tokenizer.json` reading and writing for byte-level BPE tokenizers.
extension PreTokenizer {
    static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    private static func byteLevel(useRegex: Bool) -> JSONValue {
        .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(false)), ("trim_offsets", .bool(true)),
                 ("use_regex", .bool(useRegex))])
    }

    /// The `pre_tokenizer` object transformers uses for this scheme.
    var huggingFaceJSON: JSONValue {
        func split(_ pattern: String) -> JSONValue {
            .object([("type", .string("Split")), ("pattern", .object([("Regex", .string(pattern))])),
                     ("behavior", .string("Isolated")), ("invert", .bool(false))])
        }
        switch self {
        case .gpt2: return Self.byteLevel(useRegex: true)
        case .smollm:
            return .object([("type", .string("Sequence")), ("pretokenizers", .array([
                .object([("type", .string("Digits")), ("individual_digits", .bool(true))]), Self.byteLevel(useRegex: true),
            ]))])
        case .llamaBPE:
            return .object([("type", .string("Sequence")), ("pretokenizers", .array([split(Self.llama3Pattern), Self.byteLevel(useRegex: false)]))])
        case .qwen2:
            return .object([("type", .string("Sequence")), ("pretokenizers", .array([split(Self.qwen2Pattern), Self.byteLevel(useRegex: false)]))])
        }
    }

    /// Recognizes the pre-tokenizer configurations written by `huggingFaceJSON` (and the equivalent
    /// ones in published tokenizer.json files); nil for anything else.
    init?(huggingFaceJSON json: JSONValue) {
        func isByteLevel(_ v: JSONValue, regex: Bool) -> Bool {
            v["type"]?.string == "ByteLevel" && (v["use_regex"]?.bool ?? true) == regex && !(v["add_prefix_space"]?.bool ?? false)
        }
        if isByteLevel(json, regex: true) { self = .gpt2; return }
        guard json["type"]?.string == "Sequence", let parts = json["pretokenizers"]?.array, parts.count == 2 else { return nil }
        if parts[0]["type"]?.string == "Digits", parts[0]["individual_digits"]?.bool == true, isByteLevel(parts[1], regex: true) {
            self = .smollm
            return
        }
        guard parts[0]["type"]?.string == "Split", parts[0]["behavior"]?.string == "Isolated",
              let pattern = parts[0]["pattern"]?["Regex"]?.string, isByteLevel(parts[1], regex: false) else { return nil }
        switch pattern {
        case Self.llama3Pattern: self = .llamaBPE
        case Self.qwen2Pattern: self = .qwen2
        default: return nil
        }
    }
}

extension BPETokenizer {
    /// An HF `tokenizer.json` equivalent to this tokenizer (BPE model, byte-level pre-tokenizer and
    /// decoder, special tokens as added tokens), so GGUF sources export complete model directories.
    /// Byte-level mode only (GGUF `gpt2` tokenizers are).
    public func tokenizerJSON() -> JSONValue {
        precondition(mode == .byteLevel, "tokenizerJSON(): written for byte-level tokenizers only")
        let added: [JSONValue] = specialTokens.sorted { $0.value < $1.value }.map { content, id in
            .object([("id", JSONValue(id)), ("content", .string(content)), ("single_word", .bool(false)),
                     ("lstrip", .bool(false)), ("rstrip", .bool(false)), ("normalized", .bool(false)), ("special", .bool(true))])
        }
        let byteLevel = JSONValue.object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(false)),
                                          ("trim_offsets", .bool(true)), ("use_regex", .bool(true))])
        return .object([
            ("version", .string("1.0")), ("truncation", .null), ("padding", .null),
            ("added_tokens", .array(added)), ("normalizer", .null),
            ("pre_tokenizer", preTokenizer.huggingFaceJSON),
            ("post_processor", byteLevel), ("decoder", byteLevel),
            ("model", .object([
                ("type", .string("BPE")), ("dropout", .null), ("unk_token", .null), ("continuing_subword_prefix", .null),
                ("end_of_word_suffix", .null), ("fuse_unk", .bool(false)), ("byte_fallback", .bool(false)),
                ("ignore_merges", .bool(false)),
                ("vocab", .object(tokens.enumerated().map { ($0.element, JSONValue($0.offset)) })),
                ("merges", .array(merges.map { .string($0) })),
            ])),
        ])
    }

    /// A minimal `tokenizer_config.json`: the special tokens (BOS, EOS, unknown, and padding when
    /// `paddingTokenId` names a token of the vocabulary), the BOS policy and the chat template.
    public func tokenizerConfigJSON(chatTemplate: String? = nil, maxLength: Int? = nil, paddingTokenId: Int? = nil) -> JSONValue {
        var members: [(String, JSONValue)] = [
            ("tokenizer_class", .string("GPT2Tokenizer")), ("add_bos_token", .bool(addsBosByDefault)),
            ("add_eos_token", .bool(false)), ("clean_up_tokenization_spaces", .bool(false)),
        ]
        if let bos = bosTokenId { members.append(("bos_token", .string(tokens[bos]))) }
        if let eos = eosTokenId { members.append(("eos_token", .string(tokens[eos]))) }
        if let unk = unknownTokenId { members.append(("unk_token", .string(tokens[unk]))) }
        if let pad = paddingTokenId, tokens.indices.contains(pad) { members.append(("pad_token", .string(tokens[pad]))) }
        if let maxLength { members.append(("model_max_length", JSONValue(maxLength))) }
        if let chatTemplate { members.append(("chat_template", .string(chatTemplate))) }
        return .object(members)
    }

    /// Reads a Hugging Face `tokenizer.json` with a byte-level BPE model (the pre-tokenizer schemes of
    /// `PreTokenizer`); `tokenizer_config.json` beside it, when present, supplies BOS/EOS.
    public convenience init(tokenizerJSON path: String) throws {
        let data = try InputFile.read(path)
        let json: JSONValue
        do { json = try JSONValue.parse(data) } catch {
            throw TokenizerError.malformed(source: path, reason: "invalid JSON: \(error)")
        }
        let configPath = URL(fileURLWithPath: path).deletingLastPathComponent().path + "/tokenizer_config.json"
        let config = FileManager.default.fileExists(atPath: configPath)
            ? try? JSONValue.parse(try InputFile.read(configPath)) : nil
        try self.init(tokenizerJSON: json, config: config, source: path)
    }

    convenience init(tokenizerJSON json: JSONValue, config: JSONValue?, source: String) throws {
        guard let model = json["model"], model["type"]?.string == "BPE" else {
            throw TokenizerError.unsupported(source: source, what: "model.type '\(json["model"]?["type"]?.string ?? "missing")' (only BPE)")
        }
        let mode: BPEMode
        var pre = PreTokenizer.gpt2
        if model["byte_fallback"]?.bool == true {
            mode = .byteFallback
            guard Self.isSentencePieceLayout(json) else {
                throw TokenizerError.unsupported(
                    source: source, what: "byte_fallback BPE whose normalizer/pre_tokenizer is not the SentencePiece layout (Prepend \"▁\" + Replace \" \" -> \"▁\", or Metaspace)")
            }
        } else {
            mode = .byteLevel
            if let normalizer = json["normalizer"], !normalizer.isNull {
                throw TokenizerError.unsupported(source: source, what: "normalizer '\(normalizer["type"]?.string ?? "?")'")
            }
            guard let p = PreTokenizer(huggingFaceJSON: json["pre_tokenizer"] ?? .null) else {
                throw TokenizerError.unsupported(source: source, what: "pre_tokenizer \(json["pre_tokenizer"]?.description ?? "null")")
            }
            pre = p
        }
        guard let vocab = model["vocab"]?.object else {
            throw TokenizerError.malformed(source: source, reason: "model.vocab is not an object")
        }
        var added: [(String, Int)] = []
        for entry in json["added_tokens"]?.array ?? [] {
            guard let content = entry["content"]?.string, let id = entry["id"]?.int, id >= 0 else {
                throw TokenizerError.malformed(source: source, reason: "added_tokens entry without content and id")
            }
            added.append((content, id))
        }
        let largestId = max(vocab.map { $0.1.int ?? -1 }.max() ?? -1, added.map(\.1).max() ?? -1)
        guard largestId >= 0, largestId < 10_000_000 else {
            throw TokenizerError.malformed(source: source, reason: "vocabulary ids out of range (largest \(largestId), limit 10000000)")
        }
        let size = largestId + 1
        var tokens = [String](repeating: "", count: size)
        var assigned = [Bool](repeating: false, count: size)
        for (token, idValue) in vocab {
            guard let id = idValue.int, id >= 0 else {
                throw TokenizerError.malformed(source: source, reason: "model.vocab['\(token)'] is not a non-negative integer")
            }
            guard !assigned[id] else {
                throw TokenizerError.malformed(source: source, reason: "token id \(id) appears twice in model.vocab")
            }
            tokens[id] = token
            assigned[id] = true
        }
        for (content, id) in added where !assigned[id] {
            tokens[id] = content
            assigned[id] = true
        }
        if let hole = assigned.firstIndex(of: false) {
            throw TokenizerError.malformed(source: source, reason: "no token has id \(hole)")
        }
        let merges: [String] = try (model["merges"]?.array ?? []).map { m in
            if let s = m.string { return s }
            if let pair = m.array, pair.count == 2, let a = pair[0].string, let b = pair[1].string { return a + " " + b }
            throw TokenizerError.malformed(source: source, reason: "model.merges entry \(m) is neither \"a b\" nor [a, b]")
        }
        let special = Dictionary(added.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        func specialId(_ key: String) -> Int? {
            let v = config?[key]
            let content = v?.string ?? v?["content"]?.string
            return content.flatMap { special[$0] }
        }
        let unknown = model["unk_token"]?.string.flatMap { special[$0] }
        try self.init(tokens: tokens, merges: merges, mode: mode, preTokenizer: pre, special: special, bos: specialId("bos_token"),
                      eos: specialId("eos_token"), unknown: unknown, addBos: config?["add_bos_token"]?.bool ?? false, source: source)
    }

    /// Llama-2 style: normalizer Sequence[Prepend "▁", Replace " " -> "▁"] with no pre-tokenizer, or a
    /// Metaspace pre-tokenizer ("▁", prepended, not splitting) with no normalizer.
    static func isSentencePieceLayout(_ json: JSONValue) -> Bool {
        let normalizer = json["normalizer"] ?? .null, pre = json["pre_tokenizer"] ?? .null
        if pre.isNull, normalizer["type"]?.string == "Sequence", let parts = normalizer["normalizers"]?.array, parts.count == 2 {
            return parts[0]["type"]?.string == "Prepend" && parts[0]["prepend"]?.string == "\u{2581}"
                && parts[1]["type"]?.string == "Replace" && parts[1]["pattern"]?["String"]?.string == " "
                && parts[1]["content"]?.string == "\u{2581}"
        }
        if normalizer.isNull, pre["type"]?.string == "Metaspace" {
            return pre["replacement"]?.string == "\u{2581}" && (pre["split"]?.bool ?? true) == false
                && ["always", "first"].contains(pre["prepend_scheme"]?.string ?? (pre["add_prefix_space"]?.bool == true ? "always" : "never"))
        }
        return false
    }
}

extension BPETokenizer {
    /// The tokenizer of a checkpoint: the GGUF-embedded one, else its `tokenizer.json` (with
    /// `tokenizer_config.json` for BOS/EOS).
    public static func forCheckpoint(_ checkpoint: Checkpoint) throws -> BPETokenizer {
        if let gguf = checkpoint.ggufTokenizer { return try BPETokenizer(gguf: gguf, source: checkpoint.path) }
        guard let bytes = checkpoint.auxiliaryFiles["tokenizer.json"] else {
            throw TokenizerError.malformed(source: checkpoint.path, reason: "no tokenizer.json, so text cannot be tokenized (mla-verify takes token ids with --ids instead)")
        }
        let json: JSONValue
        do { json = try JSONValue.parse(bytes) } catch {
            throw TokenizerError.malformed(source: checkpoint.path + "/tokenizer.json", reason: "invalid JSON: \(error)")
        }
        let config = checkpoint.auxiliaryFiles["tokenizer_config.json"].flatMap { try? JSONValue.parse($0) }
        return try BPETokenizer(tokenizerJSON: json, config: config, source: checkpoint.path + "/tokenizer.json")
    }
}

extension BPETokenizer {
    /// The side files to write beside a model converted from `source`: its own files, plus
    /// tokenizer.json and tokenizer_config.json built from a GGUF-embedded tokenizer so the output
    /// directory is complete for Hugging Face tools.
    public static func sideFiles(for source: Checkpoint) throws -> [String: [UInt8]] {
        var aux = source.auxiliaryFiles
        if let gguf = source.ggufTokenizer, aux["tokenizer.json"] == nil {
            let tokenizer = try BPETokenizer(gguf: gguf, source: source.path)
            aux["tokenizer.json"] = Array(try tokenizer.tokenizerJSON().serialized(indent: 2).utf8)
            aux["tokenizer_config.json"] = Array(try tokenizer.tokenizerConfigJSON(
                chatTemplate: gguf.chatTemplate, maxLength: source.config.maxPositions, paddingTokenId: gguf.paddingTokenId).serialized(indent: 2).utf8)
        }
        return aux
    }
}

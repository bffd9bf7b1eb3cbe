import Foundation
import MLACheckpoint
import MLATensor

/// Why a tokenizer definition was rejected.
public enum TokenizerError: Error, CustomStringConvertible, Sendable {
    case unsupported(source: String, what: String)
    case malformed(source: String, reason: String)

    /// One line: control characters quoted from the tokenizer file are escaped.
    public var description: String {
        switch self {
        case let .unsupported(source, what): return "\(source): unsupported tokenizer: \(what)".escapingControlCharacters
        case let .malformed(source, reason): return "\(source): invalid tokenizer: \(reason)".escapingControlCharacters
        }
    }
}

/// How a BPE vocabulary covers arbitrary text.
public enum BPEMode: Sendable, Equatable {
    /// GPT-2 style (SmolLM2, Llama 3, Qwen2): pre-tokenize, map each UTF-8 byte to GPT-2's printable
    /// alphabet, merge within each piece.
    case byteLevel
    /// SentencePiece style (Llama 2, Mistral tokenizer.json): spaces become "▁" with one prepended,
    /// merges run over Unicode scalars, and a symbol missing from the vocabulary is spelled as its
    /// UTF-8 bytes with the `<0xXX>` tokens.
    case byteFallback
}

/// A BPE tokenizer (`BPEMode`): merge adjacent symbols by rank, look up ids.
public final class BPETokenizer: @unchecked Sendable {
    // Immutable tables after init; the word cache is guarded by a lock. Hence @unchecked Sendable.
    public let tokens: [String]
    public let mode: BPEMode
    /// The pre-tokenizer of `.byteLevel` mode.
    public let preTokenizer: PreTokenizer
    public let unknownTokenId: Int?
    public let bosTokenId: Int?
    public let eosTokenId: Int?
    /// Control / user-defined tokens matched as whole strings when `allowSpecial` is set.
    public let specialTokens: [String: Int]
    /// Whether `encode(_:addBos:)` with `addBos` unspecified adds BOS (GGUF `add_bos_token`).
    public let addsBosByDefault: Bool
    let merges: [String]
    private let ids: [String: Int]
    private let ranks: [Pair: Int]
    private var cache: [String: [Int]] = [:]
    private let lock = NSLock()

    struct Pair: Hashable {
        let left: String
        let right: String
    }

    public var vocabSize: Int { tokens.count }

    init(tokens: [String], merges: [String], mode: BPEMode = .byteLevel, preTokenizer: PreTokenizer, special: [String: Int],
         bos: Int?, eos: Int?, unknown: Int? = nil, addBos: Bool, source: String) throws {
        self.tokens = tokens
        self.mode = mode
        self.unknownTokenId = unknown
        self.merges = merges
        self.preTokenizer = preTokenizer
        self.specialTokens = special
        self.bosTokenId = bos
        self.eosTokenId = eos
        self.addsBosByDefault = addBos
        var ids: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where ids[t] == nil { ids[t] = i }
        self.ids = ids
        var ranks: [Pair: Int] = [:]
        for (rank, merge) in merges.enumerated() {
            let parts = merge.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2 else {
                throw TokenizerError.malformed(source: source, reason: "merge \(rank) '\(merge)' is not two symbols")
            }
            let pair = Pair(left: String(parts[0]), right: String(parts[1]))
            guard ids[pair.left + pair.right] != nil else {
                throw TokenizerError.malformed(source: source,
                                               reason: "merge \(rank) '\(merge)' produces a token missing from the vocabulary")
            }
            if ranks[pair] == nil { ranks[pair] = rank }
        }
        self.ranks = ranks
        switch mode {
        case .byteLevel:
            guard ids[String(ByteLevel.byteToUnicode[Int(UInt8(ascii: "a"))])] != nil else {
                throw TokenizerError.malformed(source: source, reason: "no token for the byte 'a'; not a byte-level BPE vocabulary")
            }
        case .byteFallback:
            guard let missing = (0..<256).first(where: { ids[String(format: "<0x%02X>", $0)] == nil }) else { break }
            throw TokenizerError.malformed(source: source, reason: String(format: "byte_fallback but no <0x%02X> token", missing))
        }
        for (name, id) in [("bos", bos), ("eos", eos), ("unknown", unknown)] {
            if let id, !(0..<tokens.count).contains(id) {
                throw TokenizerError.malformed(source: source, reason: "\(name) token id \(id) outside the vocabulary")
            }
        }
    }

    /// From the tokenizer embedded in a GGUF file (`tokenizer.ggml.*`).
    public convenience init(gguf: GGUFTokenizerData, source: String = "GGUF tokenizer") throws {
        guard gguf.model == "gpt2" else {
            throw TokenizerError.unsupported(source: source, what: "tokenizer.ggml.model '\(gguf.model)' (only byte-level BPE 'gpt2' is supported)")
        }
        let preName = gguf.pre ?? "gpt2"
        let pre: PreTokenizer
        switch preName {
        case "gpt2", "default": pre = .gpt2
        case "smollm": pre = .smollm
        case "llama-bpe", "llama3": pre = .llamaBPE
        case "qwen2": pre = .qwen2
        default:
            throw TokenizerError.unsupported(source: source, what: "pre-tokenizer '\(preName)' (supported: gpt2, smollm, llama-bpe, qwen2)")
        }
        var special: [String: Int] = [:]
        for (i, type) in gguf.tokenTypes.enumerated() where (type == 3 || type == 4) && i < gguf.tokens.count {
            special[gguf.tokens[i]] = i
        }
        try self.init(tokens: gguf.tokens, merges: gguf.merges, preTokenizer: pre, special: special,
                      bos: gguf.bosTokenId, eos: gguf.eosTokenId, unknown: gguf.unknownTokenId, addBos: gguf.addBosToken, source: source)
    }

    /// Token ids of `text`: no BOS unless `addBos`; special-token strings in the text are matched as
    /// single tokens only with `allowSpecial`, otherwise they are encoded as plain text.
    public func encode(_ text: String, addBos: Bool = false, allowSpecial: Bool = false) -> [Int] {
        var out: [Int] = []
        if addBos, let bos = bosTokenId { out.append(bos) }
        if allowSpecial && !specialTokens.isEmpty {
            var rest = Substring(text)
            while !rest.isEmpty {
                var earliest: (Range<Substring.Index>, Int)?
                for (s, id) in specialTokens where !s.isEmpty {
                    if let r = rest.range(of: s), earliest == nil || r.lowerBound < earliest!.0.lowerBound
                        || (r.lowerBound == earliest!.0.lowerBound && r.upperBound > earliest!.0.upperBound) {
                        earliest = (r, id)
                    }
                }
                guard let (range, id) = earliest else { break }
                encodePlain(String(rest[..<range.lowerBound]), into: &out)
                out.append(id)
                rest = rest[range.upperBound...]
            }
            encodePlain(String(rest), into: &out)
        } else {
            encodePlain(text, into: &out)
        }
        return out
    }

    private func encodePlain(_ text: String, into out: inout [Int]) {
        if mode == .byteFallback {
            if !text.isEmpty { out.append(contentsOf: bpe("\u{2581}" + text.replacingOccurrences(of: " ", with: "\u{2581}"))) }
            return
        }
        for piece in preTokenizer.split(text) {
            lock.lock()
            let cached = cache[piece]
            lock.unlock()
            if let cached {
                out.append(contentsOf: cached)
                continue
            }
            let encoded = bpe(piece)
            lock.lock()
            cache[piece] = encoded
            lock.unlock()
            out.append(contentsOf: encoded)
        }
    }

    /// Merges one pre-token: repeatedly join the adjacent pair with the lowest merge rank (leftmost
    /// first among equal ranks), with a heap over candidate pairs so long inputs stay O(n log n).
    private func bpe(_ piece: String) -> [Int] {
        let initial: [String]
        switch mode {
        case .byteLevel: initial = piece.utf8.map { String(ByteLevel.byteToUnicode[Int($0)]) }
        case .byteFallback: initial = piece.unicodeScalars.map { String($0) }
        }
        var symbols = initial
        let n = symbols.count
        if n > 1 {
            var next = Array(1...n), prev = Array(-1..<(n - 1))
            var alive = [Bool](repeating: true, count: n)
            var heap = MergeHeap()
            for i in 0..<(n - 1) {
                if let r = ranks[Pair(left: symbols[i], right: symbols[i + 1])] { heap.push(rank: r, left: i) }
            }
            while let (rank, left) = heap.pop() {
                let right = next[left]
                guard alive[left], right < n, alive[right],
                      ranks[Pair(left: symbols[left], right: symbols[right])] == rank else { continue }
                symbols[left] += symbols[right]
                alive[right] = false
                next[left] = next[right]
                if next[right] < n { prev[next[right]] = left }
                if prev[left] >= 0, let r = ranks[Pair(left: symbols[prev[left]], right: symbols[left])] {
                    heap.push(rank: r, left: prev[left])
                }
                if next[left] < n, let r = ranks[Pair(left: symbols[left], right: symbols[next[left]])] {
                    heap.push(rank: r, left: left)
                }
            }
            symbols = zip(symbols, alive).filter(\.1).map(\.0)
        }
        switch mode {
        case .byteLevel:
            // Some vocabularies (SmolLM2) lack tokens for a few control bytes; such bytes are dropped,
            // as no id can represent them.
            return symbols.compactMap { ids[$0] }
        case .byteFallback:
            return symbols.flatMap { symbol -> [Int] in
                if let id = ids[symbol] { return [id] }
                return symbol.utf8.compactMap { ids[String(format: "<0x%02X>", $0)] ?? unknownTokenId }
            }
        }
    }

    /// The text of `ids`: byte-level tokens map back to bytes, decoded as UTF-8 (invalid sequences,
    /// e.g. a cut multi-byte character, become U+FFFD); special tokens give their text.
    public func decode(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && id < tokens.count {
            let t = tokens[id]
            if specialTokens[t] == id && !(mode == .byteFallback && Self.byteTokenValue(t) != nil) {
                bytes.append(contentsOf: Array(t.utf8))
                continue
            }
            switch mode {
            case .byteLevel:
                for scalar in t.unicodeScalars {
                    if let b = ByteLevel.unicodeToByte[scalar] { bytes.append(b) } else { bytes.append(contentsOf: Array(String(scalar).utf8)) }
                }
            case .byteFallback:
                if let b = Self.byteTokenValue(t) {
                    bytes.append(b)
                } else {
                    bytes.append(contentsOf: Array(t.replacingOccurrences(of: "\u{2581}", with: " ").utf8))
                }
            }
        }
        if mode == .byteFallback, bytes.first == 0x20 { bytes.removeFirst() }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The byte of a `<0xXX>` byte-fallback token.
    static func byteTokenValue(_ token: String) -> UInt8? {
        guard token.utf8.count == 6, token.hasPrefix("<0x"), token.hasSuffix(">") else { return nil }
        return UInt8(token.dropFirst(3).prefix(2), radix: 16)
    }
}

/// GPT-2's reversible map from bytes to printable Unicode scalars (`bytes_to_unicode`).
enum ByteLevel {
    static let byteToUnicode: [Unicode.Scalar] = {
        var printable = Array(33...126) + Array(161...172) + Array(174...255)
        var map = [Unicode.Scalar](repeating: " ", count: 256)
        var extra = 0
        for b in 0..<256 {
            if printable.contains(b) {
                map[b] = Unicode.Scalar(UInt32(b))!
            } else {
                map[b] = Unicode.Scalar(UInt32(256 + extra))!
                extra += 1
            }
        }
        printable.removeAll()
        return map
    }()

    static let unicodeToByte: [Unicode.Scalar: UInt8] = {
        var inverse: [Unicode.Scalar: UInt8] = [:]
        for (b, s) in byteToUnicode.enumerated() { inverse[s] = UInt8(b) }
        return inverse
    }()
}

import Foundation
import MLACheckpoint

/// Why a tokenizer definition was rejected.
public enum TokenizerError: Error, CustomStringConvertible, Sendable {
    case unsupported(source: String, what: String)
    case malformed(source: String, reason: String)

    public var description: String {
        switch self {
        case let .unsupported(source, what): return "\(source): unsupported tokenizer: \(what)"
        case let .malformed(source, reason): return "\(source): invalid tokenizer: \(reason)"
        }
    }
}

/// Byte-level BPE (GPT-2 style) as used by SmolLM2, Llama 3 and Qwen2: pre-tokenize, map each UTF-8
/// byte to GPT-2's printable alphabet, merge adjacent symbols by rank, look up ids.
public final class BPETokenizer: @unchecked Sendable {
    // Immutable tables after init; the word cache is guarded by a lock. Hence @unchecked Sendable.
    public let tokens: [String]
    public let preTokenizer: PreTokenizer
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

    init(tokens: [String], merges: [String], preTokenizer: PreTokenizer, special: [String: Int], bos: Int?, eos: Int?,
         addBos: Bool, source: String) throws {
        self.tokens = tokens
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
        guard ids[String(ByteLevel.byteToUnicode[Int(UInt8(ascii: "a"))])] != nil else {
            throw TokenizerError.malformed(source: source, reason: "no token for the byte 'a'; not a byte-level BPE vocabulary")
        }
        for (name, id) in [("bos", bos), ("eos", eos)] {
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
                      bos: gguf.bosTokenId, eos: gguf.eosTokenId, addBos: gguf.addBosToken, source: source)
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

    /// Merges one pre-token: repeatedly join the adjacent pair with the lowest merge rank.
    private func bpe(_ piece: String) -> [Int] {
        var symbols = piece.utf8.map { String(ByteLevel.byteToUnicode[Int($0)]) }
        if symbols.count > 1 {
            while true {
                var best = Int.max, at = -1
                for i in 0..<(symbols.count - 1) {
                    if let r = ranks[Pair(left: symbols[i], right: symbols[i + 1])], r < best {
                        best = r
                        at = i
                    }
                }
                if at < 0 { break }
                let merged = symbols[at] + symbols[at + 1]
                var next: [String] = []
                next.reserveCapacity(symbols.count - 1)
                var i = 0
                while i < symbols.count {
                    if i < symbols.count - 1 && symbols[i] == symbols[at] && symbols[i + 1] == symbols[at + 1]
                        && ranks[Pair(left: symbols[i], right: symbols[i + 1])] == best {
                        next.append(merged)
                        i += 2
                    } else {
                        next.append(symbols[i])
                        i += 1
                    }
                }
                symbols = next
                if symbols.count == 1 { break }
            }
        }
        // Some vocabularies (SmolLM2) lack tokens for a few control bytes; such bytes are dropped,
        // as no id can represent them.
        return symbols.compactMap { ids[$0] }
    }

    /// The text of `ids`: byte-level tokens map back to bytes, decoded as UTF-8 (invalid sequences,
    /// e.g. a cut multi-byte character, become U+FFFD); special tokens give their text.
    public func decode(_ ids: [Int]) -> String {
        var bytes: [UInt8] = []
        for id in ids where id >= 0 && id < tokens.count {
            let t = tokens[id]
            if specialTokens[t] == id {
                bytes.append(contentsOf: Array(t.utf8))
                continue
            }
            for scalar in t.unicodeScalars {
                if let b = ByteLevel.unicodeToByte[scalar] { bytes.append(b) } else { bytes.append(contentsOf: Array(String(scalar).utf8)) }
            }
        }
        return String(decoding: bytes, as: UTF8.self)
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

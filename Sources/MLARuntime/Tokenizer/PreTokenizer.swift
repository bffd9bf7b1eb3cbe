/// Splits text into the pieces byte-level BPE merges within, as the pre-tokenizer regexes of
/// llama.cpp and Hugging Face tokenizers do. Hand-written scanners over Unicode scalars (no regex
/// engine): letters are general category L*, numbers N*, whitespace the White_Space property.
public enum PreTokenizer: String, Sendable, CaseIterable {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    case gpt2
    /// SmolLM: every `\p{N}` split off alone first, then GPT-2.
    case smollm
    /// Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    case llamaBPE = "llama-bpe"
    /// Qwen2: as Llama 3 with single digits (`\p{N}`).
    case qwen2

    /// The pieces of `text`, in order; concatenated they give `text` back.
    public func split(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var pieces: [String] = []
        switch self {
        case .gpt2:
            Self.gpt2(scalars[...], into: &pieces)
        case .smollm:
            var start = 0
            for (i, s) in scalars.enumerated() where Self.isNumber(s) {
                if start < i { Self.gpt2(scalars[start..<i], into: &pieces) }
                Self.emit(scalars[...], i..<(i + 1), into: &pieces)
                start = i + 1
            }
            if start < scalars.count { Self.gpt2(scalars[start...], into: &pieces) }
        case .llamaBPE:
            Self.llama3(scalars[...], maxDigits: 3, into: &pieces)
        case .qwen2:
            Self.llama3(scalars[...], maxDigits: 1, into: &pieces)
        }
        return pieces
    }

    // ASCII (most text) is classified directly; the Unicode property lookups cost most of `split`.

    static func isLetter(_ s: Unicode.Scalar) -> Bool {
        if s.isASCII { return (s.value | 0x20) >= 0x61 && (s.value | 0x20) <= 0x7A }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    static func isNumber(_ s: Unicode.Scalar) -> Bool {
        if s.isASCII { return s.value >= 0x30 && s.value <= 0x39 }
        switch s.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    /// White_Space: in ASCII tab, line feed, vertical tab, form feed, carriage return and space.
    static func isSpace(_ s: Unicode.Scalar) -> Bool {
        s.isASCII ? s.value == 0x20 || (s.value >= 0x09 && s.value <= 0x0D) : s.properties.isWhitespace
    }

    static func isOther(_ s: Unicode.Scalar) -> Bool { !isSpace(s) && !isLetter(s) && !isNumber(s) }

    /// Appends s[range] as a String, written as UTF-8 in place (at most 4 bytes a scalar).
    private static func emit(_ s: ArraySlice<Unicode.Scalar>, _ range: Range<Int>, into pieces: inout [String]) {
        pieces.append(String(unsafeUninitializedCapacity: 4 * range.count) { bytes in
            var n = 0
            for scalar in s[range] {
                UTF8.encode(scalar) { bytes[n] = $0; n += 1 }
            }
            return n
        })
    }

    /// Length of the contraction at i ('s 't 'm 'd 're 've 'll), 0 if none.
    private static func contraction(_ s: ArraySlice<Unicode.Scalar>, _ i: Int, caseInsensitive: Bool) -> Int {
        guard s[i] == "'", i + 1 < s.endIndex else { return 0 }
        func lower(_ c: Unicode.Scalar) -> Unicode.Scalar {
            caseInsensitive && c.value >= 65 && c.value <= 90 ? Unicode.Scalar(c.value + 32)! : c
        }
        let a = lower(s[i + 1])
        if ["s", "t", "m", "d"].contains(a) { return 2 }
        if i + 2 < s.endIndex {
            let b = lower(s[i + 2])
            if (a == "r" && b == "e") || (a == "v" && b == "e") || (a == "l" && b == "l") { return 3 }
        }
        return 0
    }

    /// `\s+(?!\S)|\s+` at i (s[i] is whitespace): the run, leaving its last character for the next
    /// piece when a non-space follows and the run is longer than one.
    private static func whitespaceEnd(_ s: ArraySlice<Unicode.Scalar>, _ i: Int) -> Int {
        var j = i
        while j < s.endIndex, isSpace(s[j]) { j += 1 }
        if j < s.endIndex && j - i > 1 { return j - 1 }
        return j
    }

    private static func gpt2(_ s: ArraySlice<Unicode.Scalar>, into pieces: inout [String]) {
        var i = s.startIndex
        while i < s.endIndex {
            var end = i
            let c = contraction(s, i, caseInsensitive: false)
            let lead = s[i] == " " && i + 1 < s.endIndex ? i + 1 : i
            if c > 0 {
                end = i + c
            } else if isLetter(s[lead]) {
                end = lead
                while end < s.endIndex, isLetter(s[end]) { end += 1 }
            } else if isNumber(s[lead]) {
                end = lead
                while end < s.endIndex, isNumber(s[end]) { end += 1 }
            } else if isOther(s[lead]) {
                end = lead
                while end < s.endIndex, isOther(s[end]) { end += 1 }
            } else {
                end = whitespaceEnd(s, i)
            }
            emit(s, i..<end, into: &pieces)
            i = end
        }
    }

    private static func isNewline(_ c: Unicode.Scalar) -> Bool { c == "\r" || c == "\n" }

    private static func llama3(_ s: ArraySlice<Unicode.Scalar>, maxDigits: Int, into pieces: inout [String]) {
        var i = s.startIndex
        while i < s.endIndex {
            var end = i
            let c = contraction(s, i, caseInsensitive: true)
            if c > 0 {
                end = i + c
            } else if isLetter(s[i]) || (!isNewline(s[i]) && !isNumber(s[i]) && i + 1 < s.endIndex && isLetter(s[i + 1])) {
                // [^\r\n\p{L}\p{N}]?\p{L}+
                end = isLetter(s[i]) ? i : i + 1
                while end < s.endIndex, isLetter(s[end]) { end += 1 }
            } else if isNumber(s[i]) {
                end = i
                while end < s.endIndex, end - i < maxDigits, isNumber(s[end]) { end += 1 }
            } else if isOther(s[i]) || (s[i] == " " && i + 1 < s.endIndex && isOther(s[i + 1])) {
                // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
                end = s[i] == " " ? i + 1 : i
                while end < s.endIndex, isOther(s[end]) { end += 1 }
                while end < s.endIndex, isNewline(s[end]) { end += 1 }
            } else {
                // \s*[\r\n]+ : the longest whitespace prefix ending in a newline
                var j = i
                var lastNewline = -1
                while j < s.endIndex, isSpace(s[j]) {
                    if isNewline(s[j]) { lastNewline = j }
                    j += 1
                }
                if lastNewline >= 0 {
                    end = lastNewline + 1
                    while end < s.endIndex, isNewline(s[end]) { end += 1 }
                } else {
                    end = whitespaceEnd(s, i)
                }
            }
            emit(s, i..<end, into: &pieces)
            i = end
        }
    }
}

import Foundation
import Testing

@testable import MLARuntime

/// The hand-written pre-tokenizer scanners against ICU's regex engine (NSRegularExpression) running
/// the published patterns: an independent implementation, and the only check of the llama-bpe and
/// qwen2 scanners (no sample model uses them). Inputs avoid U+000B and U+0085, the two scalars where
/// ICU's `\s` differs from the White_Space property.
@Suite struct PreTokenizerRegexTests {
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    static let inputs: [String] = [
        "Hello, world! It's 2026-11-22 — naïve café costs €12.50.\n\tTabs  and   spaces.",
        "I'LL DO IT'S 'tis x'Re we've they'd you'm 'll '",
        "  leading and trailing  ",
        "line1\r\n\r\n  line2\n\n\nend \n \n",
        "数字١٢٣ and Ⅻ ½ x² 12345678",
        "(paren)word... !!!\n\nfoo ;;\n bar",
        "emoji 👍🏽 ok 🇫🇷!",
        "tab\t\tsep\t",
        "a\u{00A0}b\u{3000}c\u{2028}d",
        "mixed123abc 4567 89 0",
        " ",
        "\n",
    ]

    static func regexPieces(_ pattern: String, _ text: String) throws -> [String] {
        let regex = try NSRegularExpression(pattern: pattern)
        let ns = text as NSString
        return regex.matches(in: text, range: NSRange(location: 0, length: ns.length)).map { ns.substring(with: $0.range) }
    }

    /// SmolLM: every `\p{N}` scalar alone, then the GPT-2 pattern on the fragments between.
    static func smollmPieces(_ text: String) throws -> [String] {
        var pieces: [String] = [], fragment = ""
        for scalar in text.unicodeScalars {
            if try NSRegularExpression(pattern: #"^\p{N}$"#).firstMatch(in: String(scalar), range: NSRange(location: 0, length: (String(scalar) as NSString).length)) != nil {
                pieces += try regexPieces(gpt2Pattern, fragment)
                pieces.append(String(scalar))
                fragment = ""
            } else {
                fragment.unicodeScalars.append(scalar)
            }
        }
        return pieces + (try regexPieces(gpt2Pattern, fragment))
    }

    @Test(arguments: PreTokenizer.allCases)
    func scannerMatchesRegex(_ pre: PreTokenizer) throws {
        let apache = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: "/usr/share/common-licenses/Apache-2.0"))) ?? Data(),
                            as: UTF8.self)
        for text in Self.inputs + [apache] {
            let expected: [String]
            switch pre {
            case .gpt2: expected = try Self.regexPieces(Self.gpt2Pattern, text)
            case .smollm: expected = try Self.smollmPieces(text)
            case .llamaBPE: expected = try Self.regexPieces(PreTokenizer.llama3Pattern, text)
            case .qwen2: expected = try Self.regexPieces(PreTokenizer.qwen2Pattern, text)
            }
            #expect(pre.split(text) == expected, "\(pre) on \(text.debugDescription.prefix(60))")
        }
    }
}

import Foundation
import Testing
import MLATestSupport
import MLACheckpoint
@testable import MLARuntime

/// The sample model's embedded tokenizer against the independent reference ids of docs/samples.md ("Reference numbers").
@Suite struct TokenizerTests {
    static let sample: Result<BPETokenizer, any Error> = Result {
        let file = try GGUFFile(path: TestData.sampleModelPath)
        guard let data = try file.tokenizerData() else { throw TokenizerError.malformed(source: "sample", reason: "no tokenizer") }
        return try BPETokenizer(gguf: data)
    }

    @Test func sha256KnownVectors() {
        #expect(SHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test(.needsSampleData) func hamletExcerptIds() throws {
        let tok = try Self.sample.get()
        let ids = tok.encode(try TestData.hamletExcerpt())
        #expect(ids.count == 873)
        #expect(Array(ids.prefix(16)) == [98, 284, 1913, 2579, 910, 198, 788, 527, 260, 46997, 282, 9666, 15644, 198, 12998, 2406])
        #expect(Array(ids.prefix(512).suffix(4)) == [6737, 12633, 28, 198])
        #expect(SHA256.ofTokenIds(Array(ids.prefix(512))) == "1e973bf3471a83e18469d6d048a6c6521e9586779652387cf91f999a5c63867b")
    }

    @Test(.needsSampleData) func apacheExcerptIds() throws {
        let tok = try Self.sample.get()
        let ids = tok.encode(try TestData.apacheExcerpt())
        #expect(ids.count == 983)
        #expect(Array(ids.prefix(16)) == [3299, 16797, 6966, 16299, 13867, 216, 34, 30, 32, 28, 4450, 216, 34, 32, 32, 36])
        #expect(SHA256.ofTokenIds(Array(ids.prefix(512))) == "8b2ba95e2a137dddf34a5a73e47703fc1387ad7847d146ad4544a2be5f35cb9e")
    }

    @Test(.needsSampleData) func edgeCases() throws {
        let tok = try Self.sample.get()
        let text = "Hello, world! It's 2026-11-22 — naïve café costs €12.50.\n\tTabs  and   spaces."
        let ids = tok.encode(text)
        #expect(ids == [19556, 28, 905, 17, 657, 506, 216, 34, 32, 34, 38, 29, 33, 33, 29, 34, 34, 1841, 15486, 46494,
                        37366, 3499, 24927, 33, 34, 30, 37, 32, 30, 198, 197, 68, 7366, 216, 284, 256, 5600, 30])
        #expect(tok.decode(ids) == text)
        #expect(tok.encode("Once upon a time") == [6403, 1980, 253, 655])
        #expect(tok.encode("The capital of France is") == [504, 3575, 282, 4649, 314])
    }

    @Test(.needsSampleData) func specialTokensOnlyWhenAllowed() throws {
        let tok = try Self.sample.get()
        #expect(tok.encode("<|im_start|>user", allowSpecial: true).first == 1)
        #expect(tok.encode("<|im_start|>user").first != 1)
        #expect(tok.encode("hi", addBos: true).first == 1)
        #expect(tok.decode([1]) == "<|im_start|>")
    }

    /// Whole Hamlet: the stated token count, and decode(encode(text)) == text on every corpus file.
    @Test(.needsSampleData) func corpusRoundTrips() throws {
        let tok = try Self.sample.get()
        let files = try FileManager.default.contentsOfDirectory(atPath: TestData.corpus).filter { $0.hasSuffix(".txt") }.sorted()
        #expect(files.count >= 42)
        for name in files {
            let text = try String(contentsOfFile: TestData.corpus + "/" + name, encoding: .utf8)
            let ids = tok.encode(text)
            if name == "hamlet_gut.txt" { #expect(ids.count == 52_755) }
            #expect(tok.decode(ids) == text, "round trip of \(name)")
        }
    }

    @Test func rejectsUnsupportedDefinitions() throws {
        let base = GGUFTokenizerData(model: "gpt2", pre: "smollm", tokens: (0..<256).map { String(ByteLevel.byteToUnicode[$0]) },
                                     merges: [], tokenTypes: [], bosTokenId: nil, eosTokenId: nil, unknownTokenId: nil,
                                     paddingTokenId: nil, addBosToken: false, addEosToken: false, chatTemplate: nil)
        #expect(throws: Never.self) { try BPETokenizer(gguf: base) }
        var spm = base
        spm.model = "llama"
        let e1 = try #require(throws: TokenizerError.self) { try BPETokenizer(gguf: spm) }
        #expect(e1.description.contains("llama"))
        var pre = base
        pre.pre = "deepseek-coder"
        let e2 = try #require(throws: TokenizerError.self) { try BPETokenizer(gguf: pre) }
        #expect(e2.description.contains("deepseek-coder"))
        var badMerge = base
        badMerge.merges = ["a zz"]
        #expect(throws: TokenizerError.self) { try BPETokenizer(gguf: badMerge) }
        var noBytes = base
        noBytes.tokens = ["x", "y"]
        #expect(throws: TokenizerError.self) { try BPETokenizer(gguf: noBytes) }
    }

    @Test(arguments: PreTokenizer.allCases)
    func preTokenizersConcatenateBack(_ pre: PreTokenizer) {
        let text = "Hello,  world!\n\n  It's 12345 ÉTÉ's\r\n\tx  "
        #expect(pre.split(text).joined() == text)
    }

    /// The ASCII shortcut of the scanners' character classes agrees with the Unicode properties.
    @Test func asciiClassesMatchUnicodeProperties() {
        for value in UInt8(0)...UInt8(127) {
            let s = Unicode.Scalar(value)
            let category = s.properties.generalCategory
            #expect(PreTokenizer.isLetter(s) == [.uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter].contains(category), "\(value)")
            #expect(PreTokenizer.isNumber(s) == [.decimalNumber, .letterNumber, .otherNumber].contains(category), "\(value)")
            #expect(PreTokenizer.isSpace(s) == s.properties.isWhitespace, "\(value)")
        }
    }

    @Test func llama3PreTokenizerPieces() {
        // Pieces per the Llama 3 regex (hand-derived): digits in groups of three, a leading
        // non-letter glued to letters, newlines kept with preceding whitespace.
        #expect(PreTokenizer.llamaBPE.split("Hello world 12345 'S\n\n x") ==
                ["Hello", " world", " ", "123", "45", " '", "S", "\n\n", " x"])
        #expect(PreTokenizer.qwen2.split("a 123") == ["a", " ", "1", "2", "3"])
    }
}

/// tokenizer.json reading: SentencePiece-style byte-fallback BPE against the reference `tokenizers`
/// library (fixture script beside the files), and our own GGUF -> tokenizer.json export re-read.
@Suite struct TokenizerJSONTests {
    static let fixtures = Fixtures.path("tokenizer")

    @Test func byteFallbackMatchesReferenceLibrary() throws {
        let tok = try BPETokenizer(tokenizerJSON: Self.fixtures + "/bytefallback_tokenizer.json")
        #expect(tok.mode == .byteFallback)
        let expected = try JSONValue.parse(Data(contentsOf: URL(fileURLWithPath: Self.fixtures + "/bytefallback_expected.json")))
        for case let item in expected.array ?? [] {
            let text = try #require(item["text"]?.string)
            let ids = tok.encode(text)
            #expect(ids == item["ids"]?.array?.compactMap(\.int), "\(text)")
            #expect(tok.decode(ids) == text)
        }
    }

    /// An HF source's tokenizer.json written as GGUF `tokenizer.*` keys (`--format gguf`): the sample's
    /// tokenizer through tokenizer.json and back to GGUF data has the source GGUF's tokens, merges,
    /// pre-tokenizer name, special-token types and ids, and encodes like it.
    @Test(.needsSampleData) func tokenizerJSONToGGUFKeysMatchesTheSourceGGUF() throws {
        let (checkpoint, _) = try TestData.sampleModel.get()
        let source = try #require(checkpoint.ggufTokenizer)
        let tok = try TokenizerTests.sample.get()
        let viaJSON = try BPETokenizer(tokenizerJSON: JSONValue.parse(tok.tokenizerJSON().serialized()), config: tok.tokenizerConfigJSON(), source: "export")
        let data = try viaJSON.ggufTokenizerData(chatTemplate: nil, source: "export")
        #expect(data.model == "gpt2" && data.pre == source.pre && data.tokens == source.tokens && data.merges == source.merges)
        #expect(data.bosTokenId == source.bosTokenId && data.eosTokenId == source.eosTokenId)
        #expect(zip(data.tokenTypes, source.tokenTypes).allSatisfy { ($0 == 3) == ($1 == 3 || $1 == 4) })
        let text = try TestData.hamletExcerpt() + "<|im_start|> 12,345 café"
        #expect(try BPETokenizer(gguf: data).encode(text, allowSpecial: true) == tok.encode(text, allowSpecial: true))
    }

    /// Exporting a GGUF source to a Hugging Face directory names its special tokens in
    /// tokenizer_config.json as the GGUF's ids do: BOS, EOS, unknown and padding (the last two were left out).
    @Test(.needsSampleData) func ggufExportNamesEverySpecialToken() throws {
        let (checkpoint, _) = try TestData.sampleModel.get()
        let source = try #require(checkpoint.ggufTokenizer)
        let files = try BPETokenizer.sideFiles(for: checkpoint)
        let config = try JSONValue.parse(try #require(files["tokenizer_config.json"]))
        for (key, id) in [("bos_token", source.bosTokenId), ("eos_token", source.eosTokenId), ("unk_token", source.unknownTokenId),
                          ("pad_token", source.paddingTokenId)] {
            let id = try #require(id, "the sample GGUF sets \(key)")
            #expect(config[key]?.string == source.tokens[id], "\(key)")
        }
    }

    @Test(.needsSampleData) func ggufTokenizerExportReadsBackIdentically() throws {
        let tok = try TokenizerTests.sample.get()
        let json = tok.tokenizerJSON()
        let back = try BPETokenizer(tokenizerJSON: JSONValue.parse(json.serialized()), config: tok.tokenizerConfigJSON(), source: "export")
        #expect(back.preTokenizer == .smollm && back.vocabSize == tok.vocabSize && back.bosTokenId == 1 && back.eosTokenId == 2)
        let text = try TestData.hamletExcerpt() + "<|im_start|> 12,345 café"
        #expect(back.encode(text) == tok.encode(text))
        #expect(back.encode(text, allowSpecial: true) == tok.encode(text, allowSpecial: true))
    }

    @Test func unsupportedStructuresAreNamed() throws {
        let bad = try JSONValue.parse(#"{"model": {"type": "Unigram", "vocab": []}}"#)
        let e1 = try #require(throws: TokenizerError.self) { try BPETokenizer(tokenizerJSON: bad, config: nil, source: "t.json") }
        #expect(e1.description.contains("Unigram") && e1.description.hasPrefix("t.json"))
        let pre = try JSONValue.parse(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Whitespace"}}"#)
        let e2 = try #require(throws: TokenizerError.self) { try BPETokenizer(tokenizerJSON: pre, config: nil, source: "t.json") }
        #expect(e2.description.contains("Whitespace"))
    }
}

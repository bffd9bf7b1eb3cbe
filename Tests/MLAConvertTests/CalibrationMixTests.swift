import Foundation
import MLACheckpoint
import MLAConvert
import MLARuntime
import MLATestSupport
import Testing

/// The default calibration text on the real sample data (docs/samples.md): which files each domain
/// reads, and the share of the windows each domain gets at several token counts.
@Suite(.needsSampleData) struct CalibrationMixTests {
    /// Every domain's folder is in the cache and yields files; none is held out, a license text or Hamlet.
    /// The expected files are found independently: every file of the folder with the domain's suffix,
    /// less the held-out ones and those whose text holds a license marker.
    @Test func defaultDomainsLayout() throws {
        var counts: [String: Int] = [:]
        for domain in CalibrationCorpus.domains {
            let dir = SampleData.cache + "/" + domain.folder
            let files = try domain.files(in: dir)
            counts[domain.name] = files.count
            let all = try FileManager.default.subpathsOfDirectory(atPath: URL(fileURLWithPath: dir).resolvingSymlinksInPath().path)
                .filter { $0.hasSuffix(domain.suffix) }
            let licensed = try all.filter { path in
                let text = try String(contentsOfFile: dir + "/" + path, encoding: .utf8)
                return ["Apache License", "Licensed under", "Redistribution and use", "THIS SOFTWARE IS PROVIDED"].contains { text.contains($0) }
            }
            let expected = Set(all).subtracting(licensed).subtracting(domain.excluded)
            #expect(Set(files.map { String($0.dropFirst(dir.count + 1)) }) == expected, "\(domain.name)")
            for held in domain.heldOut {
                #expect(FileManager.default.fileExists(atPath: dir + "/" + held), "held-out \(held) is in the cache")
                #expect(!files.contains(dir + "/" + held))
            }
            #expect(!files.contains { $0.lowercased().contains("hamlet") })
            #expect(!files.contains { ["LICENSE", "COPYING", "NOTICE"].contains(where: URL(fileURLWithPath: $0).lastPathComponent.uppercased().hasPrefix) })
            for file in files {
                let text = try String(contentsOfFile: file, encoding: .utf8)
                #expect(!text.contains("Apache License") && !text.contains("Licensed under"), "\(file)")
            }
            if domain == .code {
                // Docutils ships two modules with a BSD license text: they are found and left out.
                #expect(licensed.contains("utils/smartquotes.py") && licensed.contains("utils/roman.py"))
            }
        }
        #expect(counts["plays"] == 36 && counts["docs"]! >= 40 && counts["code"]! >= 100, "\(counts)")
    }

    /// Each window of the default text is found in exactly the files of one domain (its tokens decoded
    /// and searched in the files' text), and each domain's tokens are within one window of its share,
    /// at several token counts; the shorter texts are prefixes of the longer.
    @Test func defaultMixHoldsItsSharesAtEveryTokenCount() throws {
        let checkpoint = try Checkpoint.open(SampleData.modelPath)
        let tokenizer = try BPETokenizer.forCheckpoint(checkpoint)
        let texts = try CalibrationCorpus.domains.map { domain in
            try domain.files(in: SampleData.cache + "/" + domain.folder).map { try String(contentsOfFile: $0, encoding: .utf8) }
        }
        let shares = CalibrationMix.standard.shares, total = shares.reduce(0, +)
        #expect(shares == [2, 1, 1])
        var text = CalibrationText()
        var longest: [[Int]] = []
        for tokens in [12_000, 8192, 2048, 1500] {
            text.tokens = tokens
            let windows = try text.windows(for: checkpoint)
            if longest.isEmpty { longest = windows } else { #expect(Array(windows.dropLast()) == Array(longest.prefix(windows.count - 1))) }
            #expect(windows.reduce(0) { $0 + $1.count } == tokens)
            var perDomain = [Int](repeating: 0, count: shares.count)
            for window in windows {
                // Whole characters only: a window may cut a multi-byte character at either end.
                let piece = String(tokenizer.decode(window).dropFirst(4).dropLast(4))
                let domains = texts.indices.filter { d in texts[d].contains { $0.contains(piece) } }
                #expect(domains.count == 1, "window found in domains \(domains)")
                if let d = domains.first { perDomain[d] += window.count }
            }
            for d in shares.indices {
                #expect(abs(Double(perDomain[d]) - Double(tokens * shares[d]) / Double(total)) <= Double(text.window),
                        "\(tokens) tokens: \(CalibrationCorpus.domains[d].name) has \(perDomain[d])")
            }
        }
    }
}

@Suite struct CalibrationMixParsingTests {
    /// `--calib-mix` spellings: named weights, unnamed domains at 0, and the refusals.
    @Test func mixParsing() throws {
        #expect(try CalibrationMix(parsing: "plays=1").shares == [1, 0, 0])
        #expect(try CalibrationMix(parsing: "code=3, plays=1").shares == [1, 0, 3])
        #expect(try CalibrationMix(parsing: "plays=2,docs=1,code=1") == .standard)
        #expect(CalibrationMix.standard.description == "plays 50 %, docs 25 %, code 25 %")
        #expect(try CalibrationMix(parsing: "docs=0,code=3,plays=1").spec == "plays=1,code=3")
        #expect(CalibrationMix.standard.spec == "plays=2,docs=1,code=1")
        for bad in ["", "plays=0", "poems=1", "plays=-1", "plays"] {
            #expect(throws: ConversionPlanError.self) { try CalibrationMix(parsing: bad) }
        }
    }
}

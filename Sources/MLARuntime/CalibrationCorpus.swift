import CKernels
import Foundation

/// One domain of the default calibration text: a folder of the sample-data cache (`SampleDataCache`,
/// docs/samples.md) and the files of it that calibration reads.
public struct CalibrationDomain: Sendable, Equatable {
    /// The name `--calib-mix` uses.
    public let name: String
    /// The folder, relative to a sample-data cache directory.
    public let folder: String
    /// What the names of the files read end with.
    public let suffix: String
    /// Paths relative to `folder` never read: the evaluation texts (`heldOut`) and other files left out.
    public let excluded: Set<String>
    /// The excluded files that are evaluation texts of this domain (docs/results.md).
    public let heldOut: [String]

    /// Shakespeare's modern-spelling plays (`*_gut.txt`) without Hamlet, the evaluation text in either
    /// spelling, and without the five poem files.
    public static let plays = CalibrationDomain(
        name: "plays", folder: SampleDataCache.corpus, suffix: "_gut.txt",
        excluded: ["hamlet_gut.txt", "hamlet_gut_f.txt", "lovers_complaint_gut.txt", "passionate_pilgrim_gut.txt",
                   "phoenix_and_the_turtle_gut.txt", "rape_of_lucrece_gut.txt", "sonnets_gut.txt"],
        heldOut: ["hamlet_gut.txt"])
    /// Technical English prose: the reStructuredText sources of the Docutils documentation, without the
    /// held-out LaTeX writer guide.
    public static let docs = CalibrationDomain(name: "docs", folder: "docs", suffix: ".txt", excluded: ["user/latex.txt"],
                                               heldOut: ["user/latex.txt"])
    /// Source code: the Python modules of the Docutils package, without the held-out state machine module.
    public static let code = CalibrationDomain(name: "code", folder: "code", suffix: ".py", excluded: ["statemachine.py"],
                                               heldOut: ["statemachine.py"])

    /// Text that marks a file holding a license text (never calibration text: the Apache-2.0 license is an
    /// evaluation text).
    public static let licenseMarkers = ["Apache License", "Licensed under", "Redistribution and use", "THIS SOFTWARE IS PROVIDED",
                                        "Permission is hereby granted", "GNU General Public License"]

    /// The files under `directory` (this domain's folder, searched recursively) whose names end with
    /// `suffix`, other than the excluded ones, license files (LICENSE, COPYING, NOTICE) and files holding
    /// a license marker, sorted by their path relative to `directory`.
    public func files(in directory: String) throws -> [String] {
        // The cache links the folders (fixtures/fetch-sample-data): walk the folder linked to.
        let resolved = URL(fileURLWithPath: directory).resolvingSymlinksInPath().path
        guard let walk = FileManager.default.enumerator(atPath: resolved) else {
            throw CocoaError(.fileReadNoSuchFile, userInfo: [NSFilePathErrorKey: directory])
        }
        var relative: [String] = []
        while let path = walk.nextObject() as? String {
            let name = (path as NSString).lastPathComponent
            guard name.hasSuffix(suffix), !excluded.contains(path),
                  !["LICENSE", "COPYING", "NOTICE"].contains(where: { name.uppercased().hasPrefix($0) }) else { continue }
            let text = (try? String(contentsOfFile: directory + "/" + path, encoding: .utf8)) ?? ""
            if !Self.licenseMarkers.contains(where: { Self.holds(text, $0) }) { relative.append(path) }
        }
        return relative.sorted().map { directory + "/" + $0 }
    }

    /// Whether `text` holds `marker`, byte for byte in UTF-8 (memmem: Foundation's `contains` compares
    /// with Unicode rules, a second per conversion on the sample's 15 MB of calibration text).
    static func holds(_ text: String, _ marker: String) -> Bool {
        var text = text, marker = marker
        return text.withUTF8 { t in marker.withUTF8 { m in ck_contains_bytes(t.baseAddress, t.count, m.baseAddress, m.count) == 1 } }
    }
}

/// The default calibration text: domains of text mixed by fixed shares of the windows (docs/samples.md).
public enum CalibrationCorpus {
    /// The domains, in the order their windows are interleaved.
    public static let domains: [CalibrationDomain] = [.plays, .docs, .code]

    /// Windows of `window` tokens from the token streams of several texts, sampled round-robin: the
    /// i-th window of each text (skipping its first `skip` tokens of front matter) in text order,
    /// then the (i+1)-th, until `totalTokens` are collected or the texts run out.
    public static func windows(streams: [[Int]], window: Int, totalTokens: Int, skip: Int = 256) -> [[Int]] {
        var out: [[Int]] = []
        var collected = 0
        var round = 0
        while collected < totalTokens {
            var any = false
            for s in streams {
                let start = skip + round * window
                guard start + window <= s.count else { continue }
                any = true
                let take = min(window, totalTokens - collected)
                out.append(Array(s[start..<(start + take)]))
                collected += take
                if collected >= totalTokens { break }
            }
            if !any { break }
            round += 1
        }
        return out
    }

    /// The windows of several domains (each domain's windows in its own order) interleaved by `shares`
    /// (weights, one per domain): window k goes to the domain furthest below its share of k + 1 windows
    /// (ties: the earlier domain). The order does not depend on `totalTokens`, so every token count takes a
    /// prefix of one sequence and each domain stays within one window of its share. The last window is
    /// cut to `totalTokens`; a domain that runs out leaves its turns to the others.
    public static func mixed(_ domains: [[[Int]]], shares: [Int], totalTokens: Int) -> [[Int]] {
        precondition(domains.count == shares.count && shares.allSatisfy { $0 >= 0 })
        let total = shares.reduce(0, +)
        var taken = [Int](repeating: 0, count: domains.count), out: [[Int]] = [], collected = 0
        while collected < totalTokens {
            let k = out.count + 1
            let open = domains.indices.filter { shares[$0] > 0 && taken[$0] < domains[$0].count }
            // The largest deficit share·k/total − taken, compared in integers; ties to the earlier domain.
            func deficit(_ d: Int) -> Int { shares[d] * k - taken[d] * total }
            guard let d = open.max(by: { (deficit($0), -$0) < (deficit($1), -$1) })
            else { break }
            let w = domains[d][taken[d]].prefix(totalTokens - collected)
            out.append(Array(w))
            collected += w.count
            taken[d] += 1
        }
        return out
    }
}

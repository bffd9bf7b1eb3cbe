import Foundation
import MLACheckpoint
import MLARuntime
import MLATensor

/// Calibration text and how it is cut: round-robin windows of `window` tokens over the files,
/// `tokens` in all (the default text is a mix of the sample data's domains, docs/samples.md).
public struct CalibrationText: Sendable {
    /// Text files; empty: the default mix of `CalibrationCorpus.domains`, each file's first 256 tokens skipped.
    public var files: [String]
    /// The shares of the default text's domains (used when `files` is empty).
    public var mix: CalibrationMix
    /// Calibration tokens in all.
    public var tokens: Int
    /// Window length in tokens; each window runs from position 0.
    public var window: Int
    /// Windows run at once through the source model, each on one BLAS thread; nil: one per core.
    public var workers: Int?
    /// The files' token streams, tokenized once per model and files and shared by the copies of this
    /// text (a default conversion cuts its statistics, layer-pass and held-out windows from them).
    private let tokenized = TokenStreams()

    public init(files: [String] = [], mix: CalibrationMix = .standard, tokens: Int = 8192, window: Int = 512, workers: Int? = nil) {
        self.files = files
        self.mix = mix
        self.tokens = tokens
        self.window = window
        self.workers = workers
    }

    /// Refuses token and window counts below 2 (a window predicts its tokens after the first, so a
    /// 1-token window scores nothing) and non-positive worker counts.
    public func validate() throws {
        guard tokens >= 2 else { throw ConversionPlanError("--calib-tokens must be at least 2, got \(tokens)") }
        guard window >= 2 else { throw ConversionPlanError("--calib-window must be at least 2 (a window predicts the tokens after its first), got \(window)") }
        if let workers, workers < 1 { throw ConversionPlanError("--calib-workers must be at least 1") }
    }

    /// A short description for summaries and provenance.
    public var description: String {
        "\(tokens) tokens of " + (files.isEmpty ? "the default mix (\(mix))" : files.joined(separator: ", "))
    }

    /// The files and folders this text reads (the default mix's folders when found).
    public var inputs: [String] { files.isEmpty ? ((try? mix.directories()).map { $0.map(\.1) } ?? []) : files }

    /// The calibration windows of `checkpoint`'s tokenized text (`tokens` in all), as token ids.
    public func windows(for checkpoint: Checkpoint) throws -> [[Int]] { try textWindows(for: checkpoint, tokens: tokens).1 }

    /// Runs the text through `checkpoint` and returns each layer's attention-input second moment; the
    /// layers are reported as stage `label` of `observer`. With `samples`, the first windows' attention
    /// inputs and outputs are kept in it (`collectCalibration(streaming:samples:)`).
    public func statistics(for checkpoint: Checkpoint, observer: any ConversionObserver = SilentObserver(), label: String = "calibrate",
                           samples: WindowSamples? = nil) throws -> CalibrationStatistics {
        let (files, windows) = try textWindows(for: checkpoint, tokens: tokens)
        observer.begin(label, total: checkpoint.config.numLayers)
        // Layer-major on the streamed source: one layer's F32 weights at a time, never the whole model.
        let stats = try collectCalibration(
            streaming: try StreamedModel(checkpoint), windows: windows, workers: workers ?? ProcessInfo.processInfo.activeProcessorCount,
            tags: ["model": checkpoint.path, "text": files.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ","),
                   "windows": String(windows.count), "window": String(window)], samples: samples) { done, _ in observer.advance(label, to: done) }
        observer.end(label)
        return stats
    }

    /// Windows of the text that the statistics did not use (the next `count` in the round-robin order),
    /// for choices measured on held-out text.
    public func heldOutWindows(for checkpoint: Checkpoint, count: Int) throws -> [[Int]] {
        let (_, windows) = try textWindows(for: checkpoint, tokens: tokens + count * window)
        let calibrated = (tokens + window - 1) / window
        guard windows.count > calibrated else {
            throw ConversionPlanError("the calibration text holds no complete window of \(window) tokens beyond the calibration's")
        }
        return Array(windows[calibrated...].prefix(count))
    }

    /// The held-out windows an automatic choice scores candidates on: whole windows after the
    /// statistics', cut to `searchTokens` tokens (nil: one window).
    func searchWindows(for checkpoint: Checkpoint, searchTokens: Int?) throws -> [[Int]] {
        let wanted = searchTokens ?? window
        let held = try heldOutWindows(for: checkpoint, count: max(1, (wanted + window - 1) / window))
        return Self.truncated(held, to: wanted)
    }

    /// `windows` cut to `tokens` tokens in all (`truncatedLengths`).
    static func truncated(_ windows: [[Int]], to tokens: Int) -> [[Int]] {
        zip(windows, truncatedLengths(windows.map(\.count), to: tokens)).map { Array($0.prefix($1)) }
    }

    /// The leading windows of `lengths` tokens that `tokens` tokens in all cover, the last one shortened,
    /// each of at least 2 tokens: their lengths.
    static func truncatedLengths(_ lengths: [Int], to tokens: Int) -> [Int] {
        var left = tokens, out: [Int] = []
        for length in lengths where left >= 2 {
            out.append(min(length, left))
            left -= min(left, length)
        }
        return out
    }

    /// The calibration files and their windows covering `tokens` tokens: round-robin over the files,
    /// and for the default text round-robin over each domain's files, the domains interleaved by the mix.
    private func textWindows(for checkpoint: Checkpoint, tokens: Int) throws -> ([String], [[Int]]) {
        let windows: [[Int]], files: [String]
        if self.files.isEmpty {
            let domains = try mix.directories().map { domain, dir in try domain.files(in: dir) }
            files = domains.flatMap { $0 }
            let streams = try self.streams(of: files, for: checkpoint)
            var next = 0
            let perDomain = domains.map { domainFiles in
                defer { next += domainFiles.count }
                return CalibrationCorpus.windows(streams: Array(streams[next..<(next + domainFiles.count)]), window: window, totalTokens: tokens)
            }
            windows = CalibrationCorpus.mixed(perDomain, shares: mix.shares.filter { $0 > 0 }, totalTokens: tokens)
        } else {
            files = self.files
            windows = CalibrationCorpus.windows(streams: try streams(of: files, for: checkpoint), window: window, totalTokens: tokens, skip: 0)
        }
        guard !windows.isEmpty else { throw ConversionPlanError("the calibration text holds no complete window of \(window) tokens") }
        return (files, windows)
    }

    /// The token streams of `files` in order, tokenized once per model and files.
    private func streams(of files: [String], for checkpoint: Checkpoint) throws -> [[Int]] {
        try tokenized.streams(key: [checkpoint.path] + files) {
            let tokenizer = try BPETokenizer.forCheckpoint(checkpoint)
            // One file per worker at a time (the tokenizer is thread-safe); streams stay in file order.
            return try parallelMap(files.count, workers: ProcessInfo.processInfo.activeProcessorCount, splitBLASThreads: false) { i in
                tokenizer.encode(try InputFile.readText(files[i]))
            }
        }
    }
}

/// The shares of the default calibration text's domains (`CalibrationCorpus.domains`): a weight per
/// domain, the windows of the text interleaved in proportion (`CalibrationCorpus.mixed`).
public struct CalibrationMix: Sendable, Equatable, CustomStringConvertible {
    /// One weight per domain of `CalibrationCorpus.domains`, in its order; at least one is positive.
    public let shares: [Int]

    /// The default mix (docs/samples.md; chosen by measurement in docs/results.md).
    public static let standard = CalibrationMix(validShares: [2, 1, 1])

    private init(validShares: [Int]) { shares = validShares }

    /// Parses `--calib-mix`: `name=weight` pairs separated by commas (`plays=2,docs=1,code=1`); domains
    /// not named get weight 0.
    public init(parsing spec: String) throws {
        var shares = [Int](repeating: 0, count: CalibrationCorpus.domains.count), named: Set<Int> = []
        for part in spec.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map { String($0).trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, let i = CalibrationCorpus.domains.firstIndex(where: { $0.name == pair[0] }),
                  let weight = Int(pair[1]), weight >= 0 else {
                throw ConversionPlanError("--calib-mix '\(spec)': expected name=weight pairs with names "
                                          + CalibrationCorpus.domains.map(\.name).joined(separator: ", ") + " and weights of 0 or more")
            }
            guard named.insert(i).inserted else { throw ConversionPlanError("--calib-mix '\(spec)': \(pair[0]) is given twice") }
            shares[i] = weight
        }
        guard shares.contains(where: { $0 > 0 }) else { throw ConversionPlanError("--calib-mix '\(spec)': give some domain a positive weight") }
        self.shares = shares
    }

    /// The `--calib-mix` spelling: "plays=2,docs=1,code=1" (the domains with a positive share).
    public var spec: String {
        zip(CalibrationCorpus.domains, shares).filter { $0.1 > 0 }.map { "\($0.0.name)=\($0.1)" }.joined(separator: ",")
    }

    /// Each domain with a positive share, with its percentage: "plays 50 %, docs 25 %, code 25 %".
    public var description: String {
        let total = Double(shares.reduce(0, +))
        return zip(CalibrationCorpus.domains, shares).filter { $0.1 > 0 }
            .map { "\($0.0.name) \(String(format: "%.4g", 100 * Double($0.1) / total)) %" }.joined(separator: ", ")
    }

    /// The domains with a positive share and their folders, in the first sample-data cache that holds
    /// them all (`SampleDataCache`: `$MLA_CACHE`, then `$XDG_CACHE_HOME/mla-convert` or
    /// `~/.cache/mla-convert`, then `./.cache`).
    public func directories() throws -> [(CalibrationDomain, String)] {
        let domains = zip(CalibrationCorpus.domains, shares).filter { $0.1 > 0 }.map(\.0)
        let folders = domains.map(\.folder)
        guard let cache = SampleDataCache.directory(holding: folders) else {
            throw ConversionPlanError("no calibration text in \(SampleDataCache.searched(folders)): pass --calib FILES, "
                                      + "--calib-stats FILE or --no-calib, or fetch the sample data with fixtures/fetch-sample-data (docs/samples.md)")
        }
        return domains.map { ($0, cache + "/" + $0.folder) }
    }
}

/// Token streams of calibration files, made once per key (the model and the files).
private final class TokenStreams: @unchecked Sendable {
    // @unchecked: `made` is read and written under `lock` only.
    private let lock = NSLock()
    private var made: [[String]: [[Int]]] = [:]

    func streams(key: [String], _ make: () throws -> [[Int]]) rethrows -> [[Int]] {
        lock.lock()
        defer { lock.unlock() }
        if let streams = made[key] { return streams }
        let streams = try make()
        made[key] = streams
        return streams
    }
}

extension CalibrationSource {
    /// The files and folders this calibration reads (an output must not overwrite or hold them).
    public var inputs: [String] {
        switch self {
        case .none: return []
        case let .statistics(path, _): return [path]
        case let .text(text): return text.inputs
        }
    }

    /// The statistics for `checkpoint`: loaded, collected from the text (reported to `observer`; with
    /// `samples`, the first windows' attention samples are kept in it), or nil for weights only.
    public func statistics(for checkpoint: Checkpoint, observer: any ConversionObserver, samples: WindowSamples? = nil) throws -> CalibrationStatistics? {
        let c = checkpoint.config
        switch self {
        case .none: return nil
        case let .statistics(path, _): return try CalibrationStatistics(path: path, numLayers: c.numLayers, hiddenSize: c.hiddenSize)
        case let .text(text): return try text.statistics(for: checkpoint, observer: observer, samples: samples)
        }
    }
}

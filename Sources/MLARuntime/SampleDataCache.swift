import Foundation

/// Where the tools find the sample data (docs/samples.md) when a command line names no file: the default
/// calibration corpus of `mla-convert` and the default evaluation text of `mla-verify`.
///
/// The cache directories are tried in this order, and the first that holds the wanted file wins:
/// 1. `$MLA_CACHE` (what `scripts/setup` and `scripts/test` use when it is set);
/// 2. the per-user cache `$XDG_CACHE_HOME/mla-convert`, else `$HOME/.cache/mla-convert` (XDG Base
///    Directory: a relative `XDG_CACHE_HOME` is ignored) — where an installed binary finds the data;
/// 3. `.cache` under the current directory (a checkout where `scripts/setup` fetched into `<repo>/.cache`).
///
/// The executable's own location is not consulted: a built or installed binary says nothing reliable
/// about where a checkout or its cache is.
public enum SampleDataCache {
    /// The corpus folder (the Shakespeare plays), relative to a cache directory. The default calibration
    /// text also reads the folders of `CalibrationCorpus.domains`.
    public static let corpus = "corpus"
    /// The evaluation text (never used for calibration), relative to a cache directory.
    public static let evaluationText = "corpus/hamlet_gut.txt"

    /// The cache directories in lookup order, from `environment` and `currentDirectory` (absolute paths,
    /// except where the environment gives a relative `MLA_CACHE`).
    public static func directories(environment: [String: String] = ProcessInfo.processInfo.environment,
                                   currentDirectory: String = FileManager.default.currentDirectoryPath) -> [String] {
        var result: [String] = []
        if let cache = environment["MLA_CACHE"], !cache.isEmpty { result.append(cache) }
        if let xdg = environment["XDG_CACHE_HOME"], xdg.hasPrefix("/") {
            result.append(xdg + "/mla-convert")
        } else if let home = environment["HOME"], !home.isEmpty {
            result.append(home + "/.cache/mla-convert")
        }
        result.append(currentDirectory + "/.cache")
        return result
    }

    /// `<directory>/<relative>` for the first cache directory where it exists, or nil.
    public static func locate(_ relative: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                              currentDirectory: String = FileManager.default.currentDirectoryPath) -> String? {
        directories(environment: environment, currentDirectory: currentDirectory).lazy
            .map { $0 + "/" + relative }
            .first { FileManager.default.fileExists(atPath: $0) }
    }

    /// The first cache directory that holds every one of `relatives`, or nil.
    public static func directory(holding relatives: [String], environment: [String: String] = ProcessInfo.processInfo.environment,
                                 currentDirectory: String = FileManager.default.currentDirectoryPath) -> String? {
        directories(environment: environment, currentDirectory: currentDirectory)
            .first { dir in relatives.allSatisfy { FileManager.default.fileExists(atPath: dir + "/" + $0) } }
    }

    /// The places `directory(holding:)` looked, for an error message: "A, B or C (each with x/, y/ and z/)".
    public static func searched(_ relatives: [String], environment: [String: String] = ProcessInfo.processInfo.environment,
                                currentDirectory: String = FileManager.default.currentDirectoryPath) -> String {
        let dirs = directories(environment: environment, currentDirectory: currentDirectory)
        return listed(dirs, "or") + " (each with " + listed(relatives.map { $0 + "/" }, "and") + ")"
    }

    /// The places `locate` looked, for an error message: "A, B or C".
    public static func searched(_ relative: String, environment: [String: String] = ProcessInfo.processInfo.environment,
                                currentDirectory: String = FileManager.default.currentDirectoryPath) -> String {
        listed(directories(environment: environment, currentDirectory: currentDirectory).map { $0 + "/" + relative }, "or")
    }

    /// "A, B or C" (`conjunction` "or"), "A" for one item.
    private static func listed(_ items: [String], _ conjunction: String) -> String {
        items.count <= 1 ? items.joined() : items.dropLast().joined(separator: ", ") + " \(conjunction) " + items[items.count - 1]
    }
}

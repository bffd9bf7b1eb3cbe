import Foundation
import MLARuntime
import Testing

/// The lookup order of the sample data when a command line names no file (`SampleDataCache`):
/// `$MLA_CACHE`, then the per-user XDG cache, then `./.cache`, the first that holds the file.
@Suite struct SampleDataCacheTests {
    /// A fresh directory with `mla/`, `xdg/mla-convert/`, `home/.cache/mla-convert/` and `cwd/.cache/`,
    /// each holding the corpus when its name is in `holding`.
    static func tree(holding: Set<String>) throws -> (root: String, dirs: [String: String]) {
        let root = NSTemporaryDirectory() + "mla-cache-\(UUID().uuidString.prefix(8))"
        let dirs = ["mla": root + "/mla", "xdg": root + "/xdg/mla-convert", "home": root + "/home/.cache/mla-convert",
                    "cwd": root + "/cwd/.cache"]
        for (name, dir) in dirs {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            if holding.contains(name) {
                try FileManager.default.createDirectory(atPath: dir + "/corpus", withIntermediateDirectories: true)
                try Data("text".utf8).write(to: URL(fileURLWithPath: dir + "/" + SampleDataCache.evaluationText))
            }
        }
        return (root, dirs)
    }

    @Test("the first cache that holds the file wins: $MLA_CACHE, XDG cache, ./.cache", arguments: [
        (["mla", "xdg", "home", "cwd"], "mla"), (["xdg", "home", "cwd"], "xdg"), (["cwd"], "cwd"),
    ])
    func lookupOrder(holding: [String], expected: String) throws {
        let (root, dirs) = try Self.tree(holding: Set(holding))
        defer { try? FileManager.default.removeItem(atPath: root) }
        let env = ["MLA_CACHE": dirs["mla"]!, "XDG_CACHE_HOME": root + "/xdg", "HOME": root + "/home"]
        let found = SampleDataCache.locate(SampleDataCache.evaluationText, environment: env, currentDirectory: root + "/cwd")
        #expect(found == dirs[expected]! + "/" + SampleDataCache.evaluationText)
        #expect(SampleDataCache.locate(SampleDataCache.corpus, environment: env, currentDirectory: root + "/cwd")
            == dirs[expected]! + "/corpus")
    }

    @Test func homeCacheWhenXDGIsUnsetOrRelative() throws {
        let (root, dirs) = try Self.tree(holding: ["home", "cwd"])
        defer { try? FileManager.default.removeItem(atPath: root) }
        for env in [["HOME": root + "/home"], ["HOME": root + "/home", "XDG_CACHE_HOME": "relative/xdg"],
                    ["HOME": root + "/home", "MLA_CACHE": ""]] {
            #expect(SampleDataCache.locate(SampleDataCache.corpus, environment: env, currentDirectory: root + "/cwd")
                == dirs["home"]! + "/corpus")
        }
        // An XDG_CACHE_HOME that is set (and absolute) replaces ~/.cache, even when it lacks the data.
        let env = ["HOME": root + "/home", "XDG_CACHE_HOME": root + "/xdg"]
        #expect(SampleDataCache.directories(environment: env, currentDirectory: root + "/cwd")
            == [root + "/xdg/mla-convert", root + "/cwd/.cache"])
        #expect(SampleDataCache.locate(SampleDataCache.corpus, environment: env, currentDirectory: root + "/cwd")
            == dirs["cwd"]! + "/corpus")
    }

    @Test func nothingFoundNamesEveryPlaceSearched() throws {
        let (root, _) = try Self.tree(holding: [])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let env = ["MLA_CACHE": root + "/mla", "HOME": root + "/home"]
        #expect(SampleDataCache.locate(SampleDataCache.corpus, environment: env, currentDirectory: root + "/cwd") == nil)
        #expect(SampleDataCache.searched(SampleDataCache.corpus, environment: env, currentDirectory: root + "/cwd")
            == "\(root)/mla/corpus, \(root)/home/.cache/mla-convert/corpus or \(root)/cwd/.cache/corpus")
    }

    /// The default calibration mix needs all its domain folders in one cache: a cache holding only the
    /// plays is passed over for a later one that holds them all, and the error names every place.
    @Test func mixFoldersComeFromOneCache() throws {
        let (root, dirs) = try Self.tree(holding: ["mla", "home"])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let folders = CalibrationCorpus.domains.map(\.folder)
        #expect(folders == ["corpus", "docs", "code"])
        for folder in folders.dropFirst() {
            try FileManager.default.createDirectory(atPath: dirs["home"]! + "/" + folder, withIntermediateDirectories: true)
        }
        let env = ["MLA_CACHE": dirs["mla"]!, "HOME": root + "/home"]
        #expect(SampleDataCache.directory(holding: folders, environment: env, currentDirectory: root + "/cwd") == dirs["home"]!)
        #expect(SampleDataCache.directory(holding: ["corpus"], environment: env, currentDirectory: root + "/cwd") == dirs["mla"]!)
        try FileManager.default.removeItem(atPath: dirs["home"]! + "/code")
        #expect(SampleDataCache.directory(holding: folders, environment: env, currentDirectory: root + "/cwd") == nil)
        #expect(SampleDataCache.searched(folders, environment: env, currentDirectory: root + "/cwd")
            == "\(root)/mla, \(root)/home/.cache/mla-convert or \(root)/cwd/.cache (each with corpus/, docs/ and code/)")
    }
}

import Foundation
import Testing
import MLACheckpoint
import MLATestSupport

/// Locates the sample model and corpus fetched by `scripts/setup` (`$MLA_CACHE`, else `<repo>/.cache`).
/// Tests that use them carry the `.needsSampleData` trait (skipped, visibly, without the data).
enum TestData {
    static var sampleModelPath: String { SampleData.modelPath }
    static var corpus: String { SampleData.corpus }

    /// The sample model loaded once per test process (loading dequantizes about 135M weights).
    static let sampleModel: Result<(Checkpoint, DecoderModelBox), any Error> = Result {
        let checkpoint = try Checkpoint.open(sampleModelPath)
        return (checkpoint, DecoderModelBox(model: try DecoderModel(config: checkpoint.config, store: checkpoint.store)))
    }

    /// Bytes [3000, 6000) of hamlet_gut.txt (docs/sample-data.md "Reference numbers").
    static func hamletExcerpt() throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: corpus + "/hamlet_gut.txt"))
        return String(decoding: data[3000..<6000], as: UTF8.self)
    }

    /// The first 5000 bytes of the Apache-2.0 license text shipped by Debian's base-files.
    static func apacheExcerpt() throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: "/usr/share/common-licenses/Apache-2.0"))
        return String(decoding: data.prefix(5000), as: UTF8.self)
    }
}

import MLARuntime

/// Wraps the model for the static cache above.
struct DecoderModelBox: @unchecked Sendable {
    let model: DecoderModel
}

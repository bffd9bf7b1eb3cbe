import Foundation
import MLACheckpoint
import MLARuntime

/// The sample model and corpus (`SampleData`) as the runtime and conversion tests read them. Tests that
/// use them carry the `.needsSampleData` trait (skipped, visibly, without the data).
public enum TestData {
    /// `SampleData.modelPath`: the sample GGUF.
    public static var sampleModelPath: String { SampleData.modelPath }
    /// `SampleData.corpus`: the folder of Shakespeare plays.
    public static var corpus: String { SampleData.corpus }

    /// The sample model loaded once per test process (loading dequantizes about 135M weights).
    public static let sampleModel: Result<(Checkpoint, DecoderModelBox), any Error> = Result {
        let checkpoint = try Checkpoint.open(sampleModelPath)
        return (checkpoint, DecoderModelBox(model: try DecoderModel(config: checkpoint.config, store: checkpoint.store)))
    }

    /// Bytes [3000, 6000) of hamlet_gut.txt (docs/samples.md "Reference numbers").
    public static func hamletExcerpt() throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: corpus + "/hamlet_gut.txt"))
        return String(decoding: data[3000..<6000], as: UTF8.self)
    }

    /// The first 5000 bytes of the Apache-2.0 license text shipped by Debian's base-files.
    public static func apacheExcerpt() throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: "/usr/share/common-licenses/Apache-2.0"))
        return String(decoding: data.prefix(5000), as: UTF8.self)
    }
}

/// Wraps the model for the static cache above.
public struct DecoderModelBox: @unchecked Sendable {
    /// The sample model, loaded whole.
    public let model: DecoderModel
}

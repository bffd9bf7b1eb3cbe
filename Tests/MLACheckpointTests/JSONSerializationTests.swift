import Foundation
import Testing
import MLATensor
@testable import MLACheckpoint

/// JSON output never holds a non-finite number (issue 19: `rope_theta` written as the bare token
/// `inf`, which no JSON reader, this toolkit's included, can read back).
@Suite struct JSONSerializationTests {
    @Test(arguments: [Double.infinity, -Double.infinity, Double.nan])
    func nonFiniteNumbersAreRefusedNamingTheirPath(value: Double) {
        let config = JSONValue.object([("a", .array([JSONValue(1), .object([("rope_theta", JSONValue(value))])]))])
        for indent in [0, 2] {
            #expect {
                try config.serialized(indent: indent)
            } throws: { error in
                guard let e = error as? JSONSerializationError else { return false }
                return e.path == "a[1].rope_theta" && e.description.hasPrefix("a[1].rope_theta is ") && !e.description.contains("\n")
            }
        }
        // Messages still show the value as held.
        #expect(config.description.contains("rope_theta\":"))
    }

    @Test func finiteNumbersOfEveryFormRoundTrip() throws {
        let values: [Double] = [0, -0.0, 1e-5, 1e15, 1.7976931348623157e308, .leastNonzeroMagnitude, -2.5, 10000, 3.3895313892515355e38]
        let json = JSONValue.array(values.map { JSONValue($0) } + [JSONValue(Int.max), JSONValue(Int.min)])
        let back = try JSONValue.parse(try json.serialized())
        #expect(back == json)
        #expect(back.array?.prefix(values.count).map { $0.double } == values)
    }

    @Test(arguments: [("0", true), ("-0", true), ("1.5e-05", true), ("1E+9", true), ("12", true), ("-0.25", true),
                      ("inf", false), ("nan", false), ("-inf", false), ("+1", false), ("01", false), ("1.", false),
                      (".5", false), ("1e", false), ("", false), ("-", false), ("1e+", false), ("0x10", false)])
    func numberTokenGrammar(text: String, valid: Bool) {
        #expect(JSONValue.isNumberToken(text) == valid)
    }

    /// A writer whose config holds +inf fails naming config.json and leaves no output, in both formats.
    @Test(arguments: [OutputFormat.hf, .hdf5])
    func writerRefusesANonFiniteConfig(format: OutputFormat) throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/out"
        let entries = [TensorWriteEntry(name: "w", dtype: .f32, shape: [2])]
        #expect {
            let writer = CheckpointWriter(format: format)
            try writer.write(
                to: try writer.output(out, force: false, inputs: []), config: .object([("rope_theta", JSONValue(Double.infinity))]),
                entries: entries, metadata: [:], auxiliaryFiles: [:]) { _ in Tensor(floats: [1, 2], shape: [2]) }
        } throws: { error in
            "\(error)".contains(format == .hf ? out + "/config.json" : out) && "\(error)".contains("rope_theta is inf")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }
}

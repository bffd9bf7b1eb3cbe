import Foundation
import Testing
import MLATensor
@testable import MLACheckpoint

/// Writers refuse infinities and NaN (issue 19: a finite input became +inf in a converted model,
/// with exit 0). The C scan must find the first non-finite value at any position, alignment and dtype.
@Suite struct FiniteOutputTests {
    /// Bit patterns of +inf, -inf and a NaN per dtype.
    static let nonFinite: [DType: [[UInt8]]] = [
        .f32: [[0, 0, 0x80, 0x7F], [0, 0, 0x80, 0xFF], [1, 0, 0xC0, 0x7F]],
        .bf16: [[0x80, 0x7F], [0x80, 0xFF], [0xC1, 0x7F]],
        .f16: [[0x00, 0x7C], [0x00, 0xFC], [0x01, 0x7E]],
        .f64: [[0, 0, 0, 0, 0, 0, 0xF0, 0x7F], [0, 0, 0, 0, 0, 0, 0xF0, 0xFF], [1, 0, 0, 0, 0, 0, 0xF8, 0x7F]],
    ]

    @Test(arguments: [DType.f32, .bf16, .f16, .f64])
    func firstNonFiniteIsFoundAnywhere(dtype: DType) {
        let n = 10_000, size = dtype.byteSize
        // Finite values up to each format's maximum (all exponent bits but the top one set).
        let finite = Tensor(floats: (0..<n).map { Float($0 % 97) - 48 }, shape: [n]).converted(to: dtype)
        let clean = finite.withRawBytes { Array($0) }
        for offset in [0, 1] {  // aligned and misaligned starts
            let padded = [UInt8](repeating: 0, count: offset) + clean
            padded.withUnsafeBytes { #expect(FloatConversion.firstNonFinite(UnsafeRawBufferPointer(rebasing: $0[offset...]), dtype: dtype) == nil) }
            for pattern in Self.nonFinite[dtype] ?? [] {
                for position in [0, 1, 4095, 4096, 4097, n - 1] {
                    var bytes = padded
                    bytes.replaceSubrange((offset + position * size)..<(offset + (position + 1) * size), with: pattern)
                    if position + 2 < n {  // a later one must not hide the first
                        bytes.replaceSubrange((offset + (n - 1) * size)..<(offset + n * size), with: pattern)
                    }
                    bytes.withUnsafeBytes {
                        #expect(FloatConversion.firstNonFinite(UnsafeRawBufferPointer(rebasing: $0[offset...]), dtype: dtype) == position,
                                "\(dtype) \(pattern) at \(position), offset \(offset)")
                    }
                }
            }
        }
        let maxima: [DType: [UInt8]] = [.f32: [0xFF, 0xFF, 0x7F, 0x7F], .bf16: [0x7F, 0x7F], .f16: [0xFF, 0x7B]]
        if let largest = maxima[dtype] { largest.withUnsafeBytes { #expect(FloatConversion.firstNonFinite($0, dtype: dtype) == nil) } }
    }

    /// Both formats, whole tensors and row blocks: one error naming the tensor, the value and its
    /// flat index, and no output left.
    @Test(arguments: [OutputFormat.hf, .hdf5])
    func writersRefuseNonFiniteTensors(format: OutputFormat) throws {
        let dir = temporaryDirectory()
        defer { cleanup(dir) }
        let out = dir + "/out"
        let entries = [TensorWriteEntry(name: "fine", dtype: .bf16, shape: [4, 2]), TensorWriteEntry(name: "bad", dtype: .bf16, shape: [4, 2])]
        for (payload, expected) in [
            (TensorPayload.whole(Tensor(floats: [1, 2, 3, .nan, 5, 6, 7, 8], shape: [4, 2]).converted(to: .bf16)), "NaN at element 3"),
            (.rowBlocks(count: 2) { i in Tensor(floats: i == 0 ? [1, 2, 3, 4] : [5, -.infinity, 7, 8], shape: [2, 2]).converted(to: .bf16) },
             "-inf at element 5"),
        ] {
            #expect {
                let writer = CheckpointWriter(format: format)
                try writer.write(to: try writer.output(out, force: false, inputs: []), config: { .object([]) }, entries: entries,
                                 metadata: [:], auxiliaryFiles: [:]) { name in
                    name == "bad" ? payload : .whole(Tensor(floats: [Float](repeating: 1, count: 8), shape: [4, 2]).converted(to: .bf16))
                }
            } throws: { error in
                guard case let .nonFiniteOutput(_, tensor, _, _) = error as? CheckpointError else { return false }
                return tensor == "bad" && "\(error)".contains("'bad' would hold \(expected)")
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
        }
    }
}

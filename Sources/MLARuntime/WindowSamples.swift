import Foundation
import MLACheckpoint
import MLATensor

/// The source attention's input (after the layer's input norm) and output on the first calibration
/// windows, for every layer, [t_w × d] each: what the statistics pass computes on its way
/// (`collectCalibration(streaming:samples:)`), kept for the automatic search, which refits and refines
/// its candidates on them instead of running the source over those windows again. They go to an
/// unlinked temporary file in `directory` (no path outlives the process, whatever ends it), 2 · layers ·
/// Σ t_w · d floats (566 MB for 8 windows of 512 tokens of the sample model), and are read back a layer
/// at a time, so memory holds one layer's.
public final class WindowSamples: @unchecked Sendable {
    // @unchecked: immutable; the file is read and written with pread/pwrite, each call at its own offset.
    public let layers: Int
    public let hiddenSize: Int
    /// Tokens of each sampled window, in window order.
    public let windowTokens: [Int]
    /// The directory the file lives in (for messages).
    public let directory: String
    private let fd: Int32
    /// Floats before each window within a layer, and per layer.
    private let windowStarts: [Int]
    private let layerFloats: Int

    /// Creates the (empty, unlinked) file for `windowTokens` windows of a model of `layers` × `hiddenSize`
    /// in `directory`.
    public init(directory: String, layers: Int, hiddenSize: Int, windowTokens: [Int]) throws {
        self.layers = layers
        self.hiddenSize = hiddenSize
        self.windowTokens = windowTokens
        self.directory = directory
        windowStarts = windowTokens.indices.map { 2 * windowTokens[..<$0].reduce(0, +) * hiddenSize }
        layerFloats = 2 * windowTokens.reduce(0, +) * hiddenSize
        var template = Array((directory + "/.mla-convert-samples-XXXXXX").utf8CString)
        // Unlinked as soon as it exists: the open descriptor keeps it, and nothing is left behind.
        fd = template.withUnsafeMutableBufferPointer { name in
            let fd = mkstemp(name.baseAddress!)
            if fd >= 0 { unlink(name.baseAddress!) }
            return fd
        }
        guard fd >= 0 else { throw Self.failed(directory, "a temporary file for the search's calibration samples", needing: layers * layerFloats) }
    }

    deinit { close(fd) }

    /// Stores window `window`'s attention input and output at `layer`, [t_w × d] each.
    public func write(layer: Int, window: Int, input: [Float], output: [Float]) throws {
        let count = windowTokens[window] * hiddenSize
        precondition(input.count == count && output.count == count, "WindowSamples: window \(window) holds \(windowTokens[window]) tokens")
        var offset = offset(layer: layer, window: window)
        for part in [input, output] {
            try part.withUnsafeBytes { bytes in
                var done = 0
                while done < bytes.count {
                    let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
                    guard n > 0 else { throw Self.failed(directory, "the search's calibration samples", needing: layers * layerFloats, wroteNothing: n == 0) }
                    done += n
                }
            }
            offset += count * MemoryLayout<Float>.size
        }
    }

    /// Window `window`'s attention input and output at `layer`, their first `rows` tokens (nil: all of
    /// them), [rows × d] each. A window runs from position 0 and attends causally, so its first rows are
    /// those of a window cut to that length.
    public func read(layer: Int, window: Int, rows: Int? = nil) throws -> (input: [Float], output: [Float]) {
        let tokens = windowTokens[window], rows = rows ?? tokens
        precondition(rows >= 0 && rows <= tokens, "WindowSamples: window \(window) holds \(tokens) tokens, not \(rows)")
        let input = offset(layer: layer, window: window), output = input + tokens * hiddenSize * MemoryLayout<Float>.size
        return (try floats(rows * hiddenSize, at: input, layer: layer), try floats(rows * hiddenSize, at: output, layer: layer))
    }

    /// `count` floats read from byte `offset` of the file (of `layer`, for the message).
    private func floats(_ count: Int, at offset: Int, layer: Int) throws -> [Float] {
        try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            let bytes = UnsafeMutableRawBufferPointer(buffer)
            var done = 0
            while done < bytes.count {
                let n = pread(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
                guard n > 0 else {
                    throw CheckpointError.malformed(file: directory, reason: "the search's calibration samples of layer \(layer) could not be read back from "
                                                    + "their temporary file there (\(n == 0 ? "it ended early" : String(cString: strerror(errno)))")
                }
                done += n
            }
            initialized = count
        }
    }

    private func offset(layer: Int, window: Int) -> Int {
        precondition(layer >= 0 && layer < layers && window >= 0 && window < windowTokens.count, "WindowSamples: no layer \(layer), window \(window)")
        return (layer * layerFloats + windowStarts[window]) * MemoryLayout<Float>.size
    }

    /// The error for a failed create or write (errno set unless the write `wroteNothing`): the search's
    /// samples of `floats` floats need that much room in `directory`.
    private static func failed(_ directory: String, _ what: String, needing floats: Int, wroteNothing: Bool = false) -> CheckpointError {
        .writeFailed(path: directory, reason: "\(what): \(wroteNothing ? "nothing was written" : String(cString: strerror(errno))); they take "
                     + "\(formatBytes(floats * MemoryLayout<Float>.size)) there (free space, or write the output elsewhere)")
    }
}

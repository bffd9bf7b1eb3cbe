import MLATensor

/// The tensors of a GGUF file under Hugging Face names, PyTorch-order shapes and HF row layout.
///
/// - Names: `GGUFNames.hfName` (unknown names keep their GGUF name).
/// - Shapes: ggml `ne` reversed, so a linear weight is `[out, in]`.
/// - Values: F32, F16, BF16 and F64 are returned as stored (a mapped slice, no copy, unless rows
///   must be permuted); Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K and Q6_K are dequantized to F32. Other
///   types fail in `tensor(_:)` with `CheckpointError.unsupportedDType` naming the type.
/// - Layout: for `general.architecture == "llama"` the rows of `attn_q` (n = heads) and `attn_k`
///   (n = KV heads), weights and biases, are un-permuted from llama.cpp's adjacent-pair order to HF
///   rotate-half order: HF row h·d + t·d/2 + i is GGUF row h·d + 2i + t. So q_proj/k_proj come out
///   in **rotate-half** layout for both llama and qwen2 (qwen2 files are not permuted).
public struct GGUFTensorStore: TensorStore {
    public let file: GGUFFile
    public let names: [String]
    private let entries: [String: Entry]

    struct Entry: Sendable {
        let gguf: GGUFTensorInfo
        let info: TensorInfo
        /// Heads whose rows are un-permuted, or nil.
        let permuteHeads: Int?
    }

    /// Opens `path` (see `GGUFFile.init(path:)`).
    public init(path: String) throws {
        try self.init(file: try GGUFFile(path: path))
    }

    /// Builds the name map. Throws when two tensors map to one HF name, or when a llama file with
    /// `attn_q`/`attn_k` lacks the head counts needed to un-permute them or has rows that do not split
    /// into heads of even size.
    public init(file: GGUFFile) throws {
        self.file = file
        let isLlama = file.architecture == "llama"
        var names: [String] = []
        var entries: [String: Entry] = [:]
        for t in file.tensors {
            let hf = GGUFNames.hfName(t.name)
            guard entries[hf] == nil else { throw CheckpointError.duplicateTensor(file: file.path, tensor: hf) }
            var heads: Int?
            if isLlama, let role = GGUFNames.ropeRole(t.name) {
                let n = try Self.headCount(file: file, role: role, tensor: t.name)
                let rows = t.ne.count == 1 ? t.ne[0] : t.ne[1]
                guard t.ne.count == 2 || (t.ne.count == 1 && t.type.blockLayout.elements == 1),
                      rows % n == 0, (rows / n) % 2 == 0 else {
                    throw CheckpointError.malformedTensor(
                        file: file.path, tensor: t.name,
                        reason: "\(t.type.name) dims \(t.ne) do not split into \(n) heads of even size; check attention.head_count(_kv)")
                }
                heads = n
            }
            // Undecodable types report F32 here; `tensor(_:)` throws for them, naming the type.
            let dtype = t.type.decodedDType?.dtype ?? .f32
            let info = TensorInfo(name: hf, shape: t.shape, dtype: dtype, storedType: t.type.name,
                                  storedBytes: t.byteCount, file: file.path)
            entries[hf] = Entry(gguf: t, info: info, permuteHeads: heads)
            names.append(hf)
        }
        self.names = names
        self.entries = entries
    }

    private static func headCount(file: GGUFFile, role: GGUFNames.RopeRole, tensor: String) throws -> Int {
        let heads = "llama.attention.head_count"
        guard let nh = file.value(heads)?.int, nh > 0 else {
            throw CheckpointError.missingConfigKey(file: file.path, key: heads)
        }
        guard role == .key else { return nh }
        guard let v = file.value("llama.attention.head_count_kv") else { return nh }
        guard let nkv = v.int, nkv > 0 else {
            throw CheckpointError.invalidConfig(
                file: file.path, key: "llama.attention.head_count_kv",
                reason: "is \(v.typeName), need one positive integer to un-permute '\(tensor)' (per-layer KV head counts are unsupported)")
        }
        return nkv
    }

    public func info(_ name: String) -> TensorInfo? { entries[name]?.info }

    /// The GGUF tensor info behind HF name `name`, or nil.
    public func ggufInfo(_ name: String) -> GGUFTensorInfo? { entries[name]?.gguf }

    /// The tensor `name` (see the type's documentation for dtype and layout).
    public func tensor(_ name: String) throws -> Tensor {
        guard let e = entries[name] else { throw CheckpointError.missingTensor(file: file.path, tensor: name) }
        let t = e.gguf
        guard let choice = t.type.decodedDType else {
            throw CheckpointError.unsupportedDType(file: file.path, tensor: t.name, dtype: "\(t.type.name) (this toolkit decodes F32, F16, BF16, F64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K; requantize the model)")
        }
        let shape = e.info.shape
        let rows = shape.count == 1 ? shape[0] : shape.dropLast().reduce(1, *)
        let rowBytes = rows == 0 ? 0 : t.byteCount / rows
        let rowElements = rows == 0 ? 0 : e.info.elementCount / rows
        // Maps HF row r to the GGUF row that holds it.
        let source: (Int) -> Int
        if let n = e.permuteHeads {
            let d = rows / n, half = d / 2
            source = { r in
                let h = r / d, w = r % d
                return h * d + 2 * (w % half) + w / half
            }
        } else {
            source = { $0 }
        }
        switch choice {
        case let .asStored(dtype):
            if e.permuteHeads == nil {
                return Tensor(dtype: dtype, shape: shape, storage: .mapped(file.mapped, offset: t.fileOffset, count: t.byteCount))
            }
            let bytes = [UInt8](unsafeUninitializedCapacity: t.byteCount) { out, initialized in
                file.withTensorBytes(t) { raw in
                    for r in 0..<rows {
                        let from = UnsafeRawBufferPointer(rebasing: raw[(source(r) * rowBytes)..<((source(r) + 1) * rowBytes)])
                        UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(out)[(r * rowBytes)..<((r + 1) * rowBytes)])
                            .copyMemory(from: from)
                    }
                }
                initialized = t.byteCount
            }
            return Tensor(dtype: dtype, shape: shape, storage: .owned(bytes))
        case .dequantizedF32:
            let count = e.info.elementCount
            // Decoded straight into the tensor's byte buffer: no second copy of the F32 values.
            let bytes = [UInt8](unsafeUninitializedCapacity: count * 4) { buffer, initialized in
                let out = UnsafeMutableBufferPointer(
                    start: UnsafeMutableRawPointer(buffer.baseAddress)?.bindMemory(to: Float.self, capacity: count), count: count)
                file.withTensorBytes(t) { raw in
                    if e.permuteHeads == nil {
                        GGMLDequantize.decode(raw, type: t.type, into: out)
                    } else {
                        for r in 0..<rows {
                            let s = source(r)
                            GGMLDequantize.decode(UnsafeRawBufferPointer(rebasing: raw[(s * rowBytes)..<((s + 1) * rowBytes)]), type: t.type,
                                                  into: UnsafeMutableBufferPointer(rebasing: out[(r * rowElements)..<((r + 1) * rowElements)]))
                        }
                    }
                }
                initialized = count * 4
            }
            return Tensor(dtype: .f32, shape: shape, storage: .owned(bytes))
        }
    }
}

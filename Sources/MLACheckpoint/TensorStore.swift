import MLATensor

/// What a reader knows about one tensor without reading its data.
public struct TensorInfo: Sendable, Equatable {
    /// Hugging Face name (GGUF names are mapped, see `GGUFNames`).
    public let name: String
    /// PyTorch-order shape, as `tensor(_:)` returns it.
    public let shape: [Int]
    /// The dtype `tensor(_:)` returns (quantized GGUF tensors dequantize to F32).
    public let dtype: DType
    /// The type as stored in the file: a safetensors dtype name or a ggml type name such as `Q4_1`.
    public let storedType: String
    /// Bytes the tensor occupies in its file.
    public let storedBytes: Int
    /// The file holding the tensor.
    public let file: String

    public init(name: String, shape: [Int], dtype: DType, storedType: String, storedBytes: Int, file: String) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.storedType = storedType
        self.storedBytes = storedBytes
        self.file = file
    }

    public var elementCount: Int { shape.reduce(1, *) }
}

/// Lazy access to a checkpoint's tensors. Opening a store reads headers only; `tensor(_:)` maps or
/// decodes one tensor on demand, so peak memory follows what the caller holds, not the model size.
public protocol TensorStore: Sendable {
    /// All tensor names, in file order.
    var names: [String] { get }
    /// Metadata of `name`, or nil when absent.
    func info(_ name: String) -> TensorInfo?
    /// The tensor `name`; throws `CheckpointError.missingTensor` when absent.
    func tensor(_ name: String) throws -> Tensor
}

extension TensorStore {
    public func contains(_ name: String) -> Bool { info(name) != nil }

    /// The tensor widened to F32 with its shape checked against `expected`.
    public func floats(_ name: String, shape expected: [Int]) throws -> [Float] {
        let t = try tensor(name)
        guard t.shape == expected else {
            throw CheckpointError.shapeMismatch(file: info(name)?.file ?? "", tensor: name, expected: expected, found: t.shape)
        }
        guard t.dtype.isComputeFloat else {
            throw CheckpointError.unsupportedDType(file: info(name)?.file ?? "", tensor: name, dtype: t.dtype.rawValue)
        }
        return t.floats()
    }
}

/// A store over tensors held in memory; used for synthetic checkpoints and for conversion outputs.
public struct InMemoryTensorStore: TensorStore {
    public private(set) var names: [String] = []
    private var tensors: [String: Tensor] = [:]
    /// Label used as the `file` of every tensor.
    public let label: String

    public init(label: String = "<memory>") { self.label = label }

    /// Adds or replaces `name`.
    public mutating func set(_ name: String, _ tensor: Tensor) {
        if tensors[name] == nil { names.append(name) }
        tensors[name] = tensor
    }

    public func info(_ name: String) -> TensorInfo? {
        guard let t = tensors[name] else { return nil }
        return TensorInfo(name: name, shape: t.shape, dtype: t.dtype, storedType: t.dtype.rawValue,
                          storedBytes: t.byteCount, file: label)
    }

    public func tensor(_ name: String) throws -> Tensor {
        guard let t = tensors[name] else { throw CheckpointError.missingTensor(file: label, tensor: name) }
        return t
    }
}

/// One tensor a writer will emit: known before any data is read, so shard plans and headers can be
/// written first and the data streamed tensor by tensor afterwards.
public struct TensorWriteEntry: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]

    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    /// Bytes of data (elements × dtype size).
    public var byteCount: Int { shape.reduce(dtype.byteSize, *) }
}

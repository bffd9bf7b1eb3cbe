/// Where a tensor's bytes live: a slice of a memory-mapped file (lazy, nothing read until used) or
/// an owned buffer.
public enum TensorStorage: Sendable {
    case mapped(MappedFile, offset: Int, count: Int)
    case owned([UInt8])
}

/// A dense row-major tensor of any stored dtype, little-endian bytes.
///
/// `shape` is in PyTorch order (slowest dimension first); a weight `[out, in]` computes y = W·x.
public struct Tensor: Sendable {
    public let dtype: DType
    public let shape: [Int]
    public let storage: TensorStorage

    /// Creates a tensor over existing bytes. `precondition`: byte count = elements × dtype size
    /// (readers validate file-derived sizes before constructing).
    public init(dtype: DType, shape: [Int], storage: TensorStorage) {
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
        precondition(Tensor.byteCount(dtype: dtype, shape: shape) == storage.byteCount,
                     "Tensor: storage holds \(storage.byteCount) bytes, shape \(shape) of \(dtype) needs \(Tensor.byteCount(dtype: dtype, shape: shape) ?? -1)")
    }

    /// An owned F32 tensor. `values.count` must equal the product of `shape`.
    public init(floats values: [Float], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "Tensor(floats:): \(values.count) values for shape \(shape)")
        self.init(dtype: .f32, shape: shape, storage: .owned(values.withUnsafeBytes { Array($0) }))
    }

    /// An owned F64 tensor. `values.count` must equal the product of `shape`.
    public init(doubles values: [Double], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "Tensor(doubles:): \(values.count) values for shape \(shape)")
        self.init(dtype: .f64, shape: shape, storage: .owned(values.withUnsafeBytes { Array($0) }))
    }

    /// Number of elements (1 for a scalar, 0 when any dimension is 0).
    public var elementCount: Int { shape.reduce(1, *) }

    /// Bytes of data.
    public var byteCount: Int { storage.byteCount }

    /// The element count of a shape read from a file, or nil when a dimension is negative or the
    /// product of the non-zero dimensions times 8 (the widest dtype) overflows `Int`. Readers accept
    /// only such shapes, so every partial product of a shape and its byte count at any dtype is
    /// computable without checks, even for an empty tensor whose other dimensions are huge
    /// ([0, 2^40, 2^40] holds no bytes, but 2^40 × 2^40 overflows).
    public static func validatedElementCount(_ shape: [Int]) -> Int? {
        var nonZero = 8
        for d in shape where d != 0 {
            guard d > 0 else { return nil }
            let (p, overflow) = nonZero.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            nonZero = p
        }
        return shape.contains(0) ? 0 : nonZero / 8
    }

    /// Element count × dtype size; nil when `validatedElementCount` refuses the shape (a negative
    /// dimension, or non-zero dimensions whose product times 8 overflows). Readers need no other check.
    public static func byteCount(dtype: DType, shape: [Int]) -> Int? {
        validatedElementCount(shape).map { $0 * dtype.byteSize }
    }

    /// Calls `body` with the tensor's raw little-endian bytes (no copy for either storage).
    public func withRawBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        switch storage {
        case let .mapped(file, offset, count):
            return try file.withBytes(offset: offset, count: count, body)
        case let .owned(bytes):
            return try bytes.withUnsafeBytes(body)
        }
    }

    /// The values widened to F32 (F64 rounded to nearest). `precondition`: a floating dtype.
    /// A mapped tensor's pages are released after the copy (`releaseMappedPages`).
    public func floats() -> [Float] {
        precondition(dtype.isComputeFloat, "Tensor.floats(): dtype \(dtype) is not a float type")
        let n = elementCount
        defer { releaseMappedPages() }
        return [Float](unsafeUninitializedCapacity: n) { out, initialized in
            withRawBytes { raw in FloatConversion.widen(raw, dtype: dtype, into: out) }
            initialized = n
        }
    }

    /// For mapped storage, drops the tensor's pages from the process's resident set once the caller
    /// has consumed them (`MappedFile.release`); a no-op for owned storage.
    public func releaseMappedPages() {
        if case let .mapped(file, offset, count) = storage { file.release(offset: offset, count: count) }
    }

    /// The values widened to F64 (exact for every floating dtype).
    public func doubles() -> [Double] {
        if dtype == .f64 {
            return withRawBytes { raw in (0..<elementCount).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) } }
        }
        return floats().map(Double.init)
    }

    /// The same values stored as `target` (a floating dtype); F32→BF16/F16 round to nearest even.
    public func converted(to target: DType) -> Tensor {
        if target == dtype { return self }
        precondition(target.isComputeFloat && dtype.isComputeFloat, "Tensor.converted: \(dtype) -> \(target) is not a float conversion")
        if target == .f64 { return Tensor(doubles: doubles(), shape: shape) }
        let values = floats()
        return Tensor(dtype: target, shape: shape, storage: .owned(FloatConversion.narrow(values, to: target)))
    }

    /// Rows `range` of the first dimension as a tensor of shape [range.count, shape[1...]]: a view for
    /// mapped storage (nothing read), a copy of those bytes for owned storage. `precondition`: at least
    /// one dimension and `range` inside it.
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(!shape.isEmpty && range.lowerBound >= 0 && range.upperBound <= shape[0], "Tensor.rows: \(range) outside \(shape)")
        let rowBytes = shape.dropFirst().reduce(dtype.byteSize, *)
        let newShape = [range.count] + shape.dropFirst()
        switch storage {
        case let .mapped(file, offset, _):
            return Tensor(dtype: dtype, shape: newShape,
                          storage: .mapped(file, offset: offset + range.lowerBound * rowBytes, count: range.count * rowBytes))
        case let .owned(bytes):
            return Tensor(dtype: dtype, shape: newShape,
                          storage: .owned(Array(bytes[(range.lowerBound * rowBytes)..<(range.upperBound * rowBytes)])))
        }
    }

    /// A copy with a new shape of the same element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(dtype: dtype, shape: newShape, storage: storage)
    }
}

extension TensorStorage {
    /// Bytes held.
    public var byteCount: Int {
        switch self {
        case let .mapped(_, _, count): return count
        case let .owned(bytes): return bytes.count
        }
    }
}

import Foundation
import MLATensor

/// Per-layer tensors for a streaming writer, produced ahead of it on background threads.
///
/// A converter's output is written tensor by tensor (`CheckpointWriter`), and each converted layer's
/// tensors are made by `produce(layer)`, which is CPU work (factorizations), while writing is mostly
/// waiting for the disk. So `produce` runs for the next layers in `order` (the order the writer will
/// ask, `CheckpointWriter.writeOrder`) on `workers` threads while the writer writes the current one,
/// at most `workers` layers ahead. A layer's tensors are held until the writer has taken every one
/// of them (a layer split across shards is produced once), then released, so memory holds about
/// `workers + 1` layers.
///
/// If the writer asks for a layer the pipeline did not foresee, it is produced at once on the calling
/// thread: a wrong `order` costs the overlap, never correctness. Call `tensor` from one thread only.
public final class StreamedLayerTensors<Extra: Sendable>: @unchecked Sendable {
    // @unchecked: all mutable state is guarded by `condition`; `produce` is @Sendable.
    private let condition = NSCondition()
    private var pending: [Int]
    private var inProgress = Set<Int>()
    private var ready: [Int: Result<([String: Tensor], Extra), any Error>] = [:]
    private var cancelled = false
    private let depth: Int
    private let produce: @Sendable (Int) throws -> ([String: Tensor], Extra)
    private let received: (Int, Extra) -> Void
    /// The source checkpoint's path, to name in errors.
    private let source: String
    /// Tensors of layers the writer has started and not finished (consumer thread only).
    private var held: [Int: [String: Tensor]] = [:]

    /// - `order`: layers in the order the writer will first ask for them.
    /// - `workers`: threads producing layers concurrently (each layer's own BLAS calls are
    ///   multithreaded separately, `BLASThreads`).
    /// - `produce(l)`: layer l's tensors by name, plus what the caller wants to keep of it (`Extra`).
    /// - `received(l, extra)`: called on the consumer's thread when layer l is first taken.
    /// - `source`: the path of the checkpoint the layers come from, named in errors.
    public init(order: [Int], workers: Int = 1, source: String, produce: @escaping @Sendable (Int) throws -> ([String: Tensor], Extra),
                received: @escaping (Int, Extra) -> Void) {
        pending = order
        depth = max(workers, 1)
        self.produce = produce
        self.received = received
        self.source = source
        for _ in 0..<depth {
            let thread = Thread { [self] in work() }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    deinit { cancel() }

    /// Stops the background threads after their current layer (call when the write ends or fails).
    public func cancel() {
        condition.lock()
        cancelled = true
        pending = []
        condition.broadcast()
        condition.unlock()
    }

    /// Tensor `name` of layer `layer`; the layer is released once all its tensors have been taken.
    public func tensor(_ name: String, layer: Int) throws -> Tensor {
        if held[layer] == nil {
            let (tensors, extra) = try take(layer)
            held[layer] = tensors
            received(layer, extra)
        }
        guard let t = held[layer]?.removeValue(forKey: name) else {
            throw CheckpointError.missingTensor(file: "\(source) (converted layer \(layer))", tensor: name)
        }
        if held[layer]?.isEmpty == true { held[layer] = nil }
        return t
    }

    private func take(_ layer: Int) throws -> ([String: Tensor], Extra) {
        condition.lock()
        if ready[layer] == nil, !inProgress.contains(layer) {
            pending.removeAll { $0 == layer }
            condition.unlock()
            return try produce(layer)
        }
        while ready[layer] == nil { condition.wait() }
        let result = ready.removeValue(forKey: layer)!
        condition.broadcast()
        condition.unlock()
        return try result.get()
    }

    private func work() {
        while true {
            condition.lock()
            while !cancelled, !pending.isEmpty, ready.count + inProgress.count >= depth { condition.wait() }
            guard !cancelled, !pending.isEmpty else {
                condition.unlock()
                return
            }
            let layer = pending.removeFirst()
            inProgress.insert(layer)
            condition.unlock()
            let result = Result { try produce(layer) }
            condition.lock()
            ready[layer] = result
            inProgress.remove(layer)
            condition.broadcast()
            condition.unlock()
        }
    }
}

import MLACheckpoint

/// How many layers a conversion converts at once (each on its own thread) and how many BLAS threads
/// each uses. Two layers on one BLAS thread each beat one layer on two BLAS threads (the serial steps
/// between GEMMs then run in parallel too; `docs/performance.md`), at the cost of one more layer's
/// working set in memory.
public struct LayerParallelism: Equatable, Sendable {
    public let workers: Int
    /// BLAS threads per worker while layers convert; nil leaves the process setting (--threads, else all cores).
    public let blasThreads: Int?

    public init(workers: Int, blasThreads: Int?) {
        self.workers = workers
        self.blasThreads = blasThreads
    }

    /// Memory the automatic choice may spend on layers in flight beyond the first.
    public static let extraLayerBytes = 512 << 20

    /// `requested` workers when given; else as many as `cores` allow whose extra layers fit in
    /// `extraLayerBytes` (`layerBytes` per layer), or, when `threads` BLAS threads are fixed, as many
    /// as leave `threads` cores to each. Each worker gets `threads` BLAS threads when given, else
    /// cores / workers (at least one).
    public static func choose(requested: Int?, layerBytes: Int, cores: Int, threads: Int?) -> LayerParallelism {
        if let requested {
            return LayerParallelism(workers: requested, blasThreads: threads != nil || requested == 1 ? nil : max(1, cores / requested))
        }
        let fit = 1 + extraLayerBytes / max(layerBytes, 1)
        if let threads { return LayerParallelism(workers: max(1, min(fit, cores / max(threads, 1))), blasThreads: nil) }
        let workers = max(1, min(fit, cores))
        return LayerParallelism(workers: workers, blasThreads: workers == 1 ? nil : max(1, cores / workers))
    }

    /// The size proxy `choose` uses: the F32 bytes of layer 0's source weights (attention and MLP).
    public static func sourceLayerBytes(_ checkpoint: Checkpoint) -> Int {
        let prefix = LayerTensorNames(layer: 0).prefix
        return checkpoint.store.names.filter { $0.hasPrefix(prefix) }.reduce(0) { $0 + 4 * (checkpoint.store.info($1)?.elementCount ?? 0) }
    }
}

import Foundation
import MLALinalg

/// Calls `body(0..<count)` on up to `workers` threads. With more than one worker and
/// `splitBLASThreads` the BLAS threads are shared out among them (restored afterwards): one each when
/// there are as many items as workers, since on 2 cores two windows at once on one BLAS thread each beat
/// one window on two, the element-wise work between GEMMs running in parallel too (measured for
/// calibration, `docs/performance.md`); more each when there are fewer items than workers, so no core
/// idles. Work without BLAS calls passes false and leaves the process-wide BLAS setting alone, as do
/// kernels whose calls run one at a time (`BLASConcurrency`): each call then keeps every thread. The
/// first error thrown is rethrown after all finish.
public func inParallel(_ count: Int, workers: Int, splitBLASThreads: Bool = true,
                       _ body: @Sendable (Int) throws -> Void) throws {
    let threads = max(1, min(workers, count))
    if threads == 1 {
        for i in 0..<count { try body(i) }
        return
    }
    let previous = BLASThreads.current, split = splitBLASThreads && BLASConcurrency.callsMayOverlap
    if split { BLASThreads.set(max(1, previous / threads)) }
    defer { if split { BLASThreads.set(previous) } }
    let errors = ErrorSlot()
    let next = Counter()
    DispatchQueue.concurrentPerform(iterations: threads) { _ in
        while let i = next.take(below: count), !errors.isSet {
            do { try body(i) } catch { errors.set(error) }
        }
    }
    if let error = errors.error { throw error }
}

/// `transform(i)` for i in 0..<count in index order, computed by `inParallel` (same arguments).
public func parallelMap<T>(_ count: Int, workers: Int, splitBLASThreads: Bool = true,
                           _ transform: @Sendable (Int) throws -> T) throws -> [T] {
    let slots = ParallelSlots<T>(count: count)
    try inParallel(count, workers: workers, splitBLASThreads: splitBLASThreads) { slots[$0] = try transform($0) }
    // Every slot is filled: inParallel returns only when every index ran without throwing.
    return slots.all.map { $0! }
}

/// A shared index handed out once each (`inParallel`).
private final class Counter: @unchecked Sendable {
    // @unchecked: `value` is guarded by `lock`.
    private let lock = NSLock()
    private var value = 0

    func take(below limit: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard value < limit else { return nil }
        value += 1
        return value - 1
    }
}

/// The first error of parallel work (`inParallel`).
private final class ErrorSlot: @unchecked Sendable {
    // @unchecked: `stored` is guarded by `lock`.
    private let lock = NSLock()
    private var stored: (any Error)?

    var error: (any Error)? { lock.lock(); defer { lock.unlock() }; return stored }
    var isSet: Bool { error != nil }

    func set(_ error: any Error) {
        lock.lock()
        if stored == nil { stored = error }
        lock.unlock()
    }
}

/// One result slot per index for parallel work (`inParallel`), lock-protected.
public final class ParallelSlots<Element>: @unchecked Sendable {
    // @unchecked: `values` is guarded by `lock`.
    private let lock = NSLock()
    private var values: [Element?]

    public init(count: Int) { values = Array(repeating: nil, count: count) }

    public subscript(index: Int) -> Element? {
        get { lock.lock(); defer { lock.unlock() }; return values[index] }
        set { lock.lock(); values[index] = newValue; lock.unlock() }
    }

    /// The slots in index order (nil where nothing was stored).
    public var all: [Element?] { lock.lock(); defer { lock.unlock() }; return values }
}

/// A binary min-heap of candidate merges ordered by (rank, left position): BPE applies the
/// lowest-ranked pair first and, among equal ranks, the leftmost.
struct MergeHeap {
    private var items: [(rank: Int, left: Int)] = []

    private static func less(_ a: (rank: Int, left: Int), _ b: (rank: Int, left: Int)) -> Bool {
        a.rank != b.rank ? a.rank < b.rank : a.left < b.left
    }

    mutating func push(rank: Int, left: Int) {
        items.append((rank, left))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard Self.less(items[i], items[parent]) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> (rank: Int, left: Int)? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count, Self.less(items[l], items[m]) { m = l }
                if r < items.count, Self.less(items[r], items[m]) { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}

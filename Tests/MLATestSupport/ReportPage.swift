import MLACheckpoint

/// What an `mla-verify --report` page exposes for checking, read back with plain pattern matching:
/// table cells tied to the `--json` object and the marks of its SVG charts.
public struct ReportPage {
    public let html: String

    public init(_ html: String) { self.html = html }

    /// (data-key, data-value) of every table cell tied to the JSON, in document order.
    public var tableValues: [(key: String, value: String)] {
        html.matches(of: /data-key="([^"]*)" data-value="([^"]*)"/).map { (String($0.output.1), String($0.output.2)) }
    }

    /// The `data-key`s of the marks of series `series` in each `<svg>` that has any, in document order.
    public func markKeys(series: String) -> [[String]] {
        html.components(separatedBy: "<svg").dropFirst().map { svg in
            svg.matches(of: /class="mark" data-series="([^"]*)" data-key="([^"]*)"/)
                .filter { $0.output.1 == series }
                .map { String($0.output.2) }
        }.filter { !$0.isEmpty }
    }

    /// The table keys whose value is missing from `json` or differs from it (as numbers).
    public func mismatches(with json: JSONValue) -> [String] {
        tableValues.compactMap { key, value in
            guard let number = Self.lookup(json, path: key)?.double, Double(value) == number else { return key }
            return nil
        }
    }

    /// The member at a path such as `kl.mean` or `layers[3].rel_error`.
    public static func lookup(_ json: JSONValue, path: String) -> JSONValue? {
        var node: JSONValue? = json
        for part in path.split(separator: ".") {
            let pieces = part.split(separator: "[")
            node = pieces.first.flatMap { node?[String($0)] }
            for index in pieces.dropFirst() {
                guard let i = Int(index.dropLast()), let items = node?.array, i < items.count else { return nil }
                node = items[i]
            }
        }
        return node
    }
}

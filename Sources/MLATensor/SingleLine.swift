extension String {
    /// The string with every control character (newline, tab, escape, DEL, the C1 controls, the
    /// Unicode line and paragraph separators) written as an escape such as `\n` or `\u{1B}`. Error
    /// descriptions pass through this, so a message quoting a name read from a damaged file (a GGUF
    /// key, a tensor name, a JSON string) stays the one line the command-line tools promise.
    public var escapingControlCharacters: String {
        guard unicodeScalars.contains(where: Self.isControl) else { return self }
        var out = String.UnicodeScalarView()
        for scalar in unicodeScalars {
            guard Self.isControl(scalar) else { out.append(scalar); continue }
            let escape: String
            switch scalar {
            case "\n": escape = "\\n"
            case "\r": escape = "\\r"
            case "\t": escape = "\\t"
            default: escape = "\\u{\(String(scalar.value, radix: 16, uppercase: true))}"
            }
            out.append(contentsOf: escape.unicodeScalars)
        }
        return String(out)
    }

    private static func isControl(_ s: Unicode.Scalar) -> Bool {
        s.value < 0x20 || (0x7F...0x9F).contains(s.value) || s.value == 0x2028 || s.value == 0x2029
    }
}

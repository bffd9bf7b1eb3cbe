/// The toolkit's version, written into every output's provenance metadata.
public enum ToolkitVersion {
    public static let string = "0.1.0"
}

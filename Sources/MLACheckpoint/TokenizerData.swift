/// A tokenizer definition as embedded in GGUF metadata (`tokenizer.ggml.*`), handed to the
/// runtime's tokenizer without interpretation.
public struct GGUFTokenizerData: Sendable, Equatable {
    /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece), ...
    public var model: String
    /// `tokenizer.ggml.pre`: pre-tokenizer id such as "smollm", "gpt2", "llama-bpe", "qwen2"; nil if absent.
    public var pre: String?
    /// Token strings by id (byte-level BPE tokens are in GPT-2's byte-to-unicode alphabet).
    public var tokens: [String]
    /// Merge rules "left right", highest priority first.
    public var merges: [String]
    /// Per token: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte; empty if absent.
    public var tokenTypes: [Int32]
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    public var unknownTokenId: Int?
    public var paddingTokenId: Int?
    public var addBosToken: Bool
    public var addEosToken: Bool
    /// `tokenizer.chat_template`, if present.
    public var chatTemplate: String?

    public init(model: String, pre: String?, tokens: [String], merges: [String], tokenTypes: [Int32],
                bosTokenId: Int?, eosTokenId: Int?, unknownTokenId: Int?, paddingTokenId: Int?,
                addBosToken: Bool, addEosToken: Bool, chatTemplate: String?) {
        self.model = model
        self.pre = pre
        self.tokens = tokens
        self.merges = merges
        self.tokenTypes = tokenTypes
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
        self.unknownTokenId = unknownTokenId
        self.paddingTokenId = paddingTokenId
        self.addBosToken = addBosToken
        self.addEosToken = addEosToken
        self.chatTemplate = chatTemplate
    }
}

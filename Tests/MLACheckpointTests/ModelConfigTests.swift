import Testing
@testable import MLACheckpoint

/// Config normalization against real-world config.json texts (abridged from the published files of
/// each model; values as published).
@Suite struct ModelConfigTests {
    static let smolLM2 = """
    {"architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1, "eos_token_id": 2,
     "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664,
     "intermediate_size": 1536, "max_position_embeddings": 8192, "model_type": "llama",
     "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3, "pretraining_tp": 1,
     "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true,
     "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 49152}
    """

    func config(_ text: String) throws -> ModelConfig {
        try ModelAdapters.config(from: try JSONValue.parse(text), file: "config.json")
    }

    @Test func smolLM2() throws {
        let c = try config(Self.smolLM2)
        #expect(c.family == .llama)
        #expect(c.numLayers == 30 && c.hiddenSize == 576 && c.intermediateSize == 1536)
        #expect(c.numHeads == 9 && c.numKVHeads == 3 && c.headDim == 64 && c.groupSize == 3)
        #expect(c.attentionKind == "GQA")
        #expect(c.ropeTheta == 100000 && c.ropeScaling == .none)
        #expect(c.rmsNormEps == 1e-5)
        #expect(c.tiedEmbeddings && !c.qkvBias && !c.outputBias)
        #expect(c.kvCacheValuesPerToken == 2 * 3 * 64 * 30)
        #expect(c.bosTokenId == 1 && c.eosTokenId == 2)
    }

    @Test func qwen25HasBiasesAndNoOutputBias() throws {
        let c = try config("""
        {"architectures": ["Qwen2ForCausalLM"], "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
         "hidden_size": 896, "intermediate_size": 4864, "max_position_embeddings": 32768, "max_window_layers": 21,
         "model_type": "qwen2", "num_attention_heads": 14, "num_hidden_layers": 24, "num_key_value_heads": 2,
         "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
         "torch_dtype": "bfloat16", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936}
        """)
        #expect(c.family == .qwen2 && c.qkvBias && !c.outputBias)
        #expect(c.headDim == 64 && c.numKVHeads == 2 && c.ropeTheta == 1_000_000)
    }

    @Test func llama31ScalingAndDefaults() throws {
        let c = try config("""
        {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
         "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
         "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "eos_token_id": [128001, 128008, 128009],
         "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
        """)
        #expect(c.ropeScaling == .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192))
        #expect(!c.tiedEmbeddings, "transformers defaults tie_word_embeddings to false")
        #expect(c.eosTokenId == 128001)
        #expect(c.headDim == 128)
    }

    @Test func transformers5RopeParametersLayout() throws {
        let c = try config("""
        {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
         "num_hidden_layers": 2, "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 4096,
         "rope_parameters": {"rope_theta": 250000.0, "rope_type": "yarn", "factor": 4.0,
                             "original_max_position_embeddings": 1024}}
        """)
        #expect(c.ropeTheta == 250000)
        #expect(c.ropeScaling == .yarn(factor: 4, originalMaxPositions: 1024, betaFast: 32, betaSlow: 1,
                                       attentionFactor: nil, mscale: nil, mscaleAllDim: nil, truncate: true))
        #expect(c.rmsNormEps == 1e-6, "absent rms_norm_eps defaults to 1e-6")
        #expect(c.numKVHeads == 2)
    }

    @Test func mistralSlidingWindow() throws {
        let base = """
        "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 32768, "max_position_embeddings": 32768
        """
        let v03 = try config("{\(base), \"sliding_window\": null}")
        #expect(v03.family == .mistral)
        #expect(throws: CheckpointError.self) { try config("{\(base), \"sliding_window\": 4096}") }
        #expect(throws: CheckpointError.self) { try config("{\(base)}") }
    }

    @Test(arguments: ["qwen3", "gemma3", "deepseek_v2", "falcon"])
    func refusedOrUnknownTypesNameTheReason(modelType: String) throws {
        let error = try #require(throws: CheckpointError.self) {
            try config("""
            {"model_type": "\(modelType)", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
             "num_hidden_layers": 2, "vocab_size": 100}
            """)
        }
        #expect(error.description.contains("config.json"))
        #expect(error.description.contains(modelType))
    }

    @Test func missingAndInvalidKeysAreNamed() throws {
        let missing = try #require(throws: CheckpointError.self) {
            try config(#"{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4}"#)
        }
        #expect(missing.description.contains("'num_hidden_layers'") || missing.description.contains("'intermediate_size'"))
        let badKV = try #require(throws: CheckpointError.self) {
            try config("""
            {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
             "num_key_value_heads": 3, "num_hidden_layers": 2, "vocab_size": 100}
            """)
        }
        #expect(badKV.description.contains("num_key_value_heads"))
        let partial = try #require(throws: CheckpointError.self) {
            try config("""
            {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
             "num_hidden_layers": 2, "vocab_size": 100, "partial_rotary_factor": 0.5}
            """)
        }
        #expect(partial.description.contains("partial_rotary_factor"))
        #expect(throws: CheckpointError.self) {
            try config("""
            {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
             "num_hidden_layers": 2, "vocab_size": 100, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}
            """)
        }
    }
}

@Suite struct JSONValueTests {
    @Test func rejectsDuplicateKeysAtAnyDepth() {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(#"{"a": 1, "a": 2}"#) }
        #expect(throws: JSONParseError.self) { try JSONValue.parse(#"{"a": {"b": 1, "b": 1}}"#) }
    }

    @Test func roundTripsKeyOrderNumbersAndEscapes() throws {
        let text = #"{"z":1,"a":[1.5e-05,-2,true,null],"s":"tab\t\"q\" \u00e9 \ud83d\ude00"}"#
        let v = try JSONValue.parse(text)
        #expect(v.object?.map(\.0) == ["z", "a", "s"])
        #expect(v["s"]?.string == "tab\t\"q\" é 😀")
        #expect(try JSONValue.parse(v.serialized()) == v)
        #expect(try JSONValue.parse(v.serialized(indent: 2)) == v)
        #expect(v["a"]?.array?.first?.double == 1.5e-05)
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\" 1}", "01x", "\"\\x\"", "{} x", "\"\u{01}\""])
    func rejectsMalformed(text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
    }
}

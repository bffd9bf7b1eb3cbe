import Foundation
import MLACheckpoint
import MLAConvert
import MLARuntime
import MLATensor
import MLATestSupport
import Testing

extension ConversionTests {
    /// One conversion of the real model at 50 % written twice, natively and as a deepseek2 GGUF (F32):
    /// the GGUF read back by the runtime scores the Hamlet excerpt like the native output (the residual
    /// rescale is exact; the latent norm's deviation is far below float rounding on real tokens), its
    /// keys and tensor shapes are llama.cpp's, W_UK/W_UV come back bit for bit, and the tokenizer is
    /// the source's; the F16 and Q8_0 files of the same layers stay within their rounding.
    @Test("GGUF (deepseek2) output scores like the native output of the same conversion", .needsSampleData)
    func ggufExportMatchesNative() throws {
        let (checkpoint, layers, dir) = try Self.nativeAndGGUF()
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let file = try GGUFFile(path: dir + "/model.gguf")
        func key(_ name: String) -> Int? { file.value("deepseek2." + name)?.int }
        #expect(file.architecture == "deepseek2" && key("block_count") == 30 && key("leading_dense_block_count") == 30)
        #expect(key("attention.kv_lora_rank") == 160 && key("attention.key_length") == 192 && key("attention.value_length") == 160)
        let w = layers[0]
        #expect(key("attention.key_length_mla") == w.dNope + 32 && key("attention.value_length_mla") == 64 && key("rope.dimension_count") == 32)
        #expect(key("attention.q_lora_rank") == 0 && key("attention.head_count_kv") == 1 && key("expert_shared_count") == 0)
        #expect(file.value("deepseek2.attention.layer_norm_rms_epsilon") == .float32(Float(1e-5) * 0x1p24))
        #expect(file.tensorInfo("blk.0.attn_k_b.weight")?.ne == [w.dNope, 160, 9] && file.tensorInfo("blk.0.attn_v_b.weight")?.ne == [160, 64, 9])
        #expect(file.tensorInfo("blk.0.attn_kv_a_mqa.weight")?.ne == [576, 192] && file.tensorInfo("output.weight") != nil)
        let source = try GGUFFile(path: checkpoint.path)
        let tokenizerKeys = source.metadata.filter { $0.key.hasPrefix("tokenizer.") }
        #expect(tokenizerKeys.count >= 5 && tokenizerKeys.allSatisfy { file.value($0.key) == $0.value })

        let gguf = try Checkpoint.open(dir + "/model.gguf")
        let read = try MLALayerReader(gguf).layer(3)
        #expect(read.kvB == layers[3].kvB && read.kRope == layers[3].kRope)
        // Q8_0 stores one F16 scale amax/127 per 32 values: the latent rows' scales must be normal F16
        // numbers (≥ 2^-14), or quantization loses them, as it does the 1e-9 rows of the HF export.
        let blocks = stride(from: 0, to: read.kvA.count, by: 32).map { read.kvA[$0..<min($0 + 32, read.kvA.count)].map(abs).max()! / 127 }
        let subnormal = Double(blocks.filter { $0 < 0x1p-14 }.count) / Double(blocks.count)
        #expect(subnormal < 0.01, "\(subnormal) of the latent rows' Q8_0 blocks would get a subnormal F16 scale")

        let ids = try Self.hamletIds(256)
        let native = try evaluatePerplexity(model: try StreamedModel(try Checkpoint.open(dir + "/native")), tokens: ids, window: 256)
        let fromGGUF = try evaluatePerplexity(model: try StreamedModel(gguf), tokens: ids, window: 256)
        // 62.3801 vs 62.3787 here: the latent norm's deviation (≤ 2^-10 for any input) shows at 2e-5.
        #expect(abs(fromGGUF.perplexity / native.perplexity - 1) < 1e-4, "GGUF \(fromGGUF.perplexity) vs native \(native.perplexity)")

        // F16 storage of every 2-D tensor (the HF export cannot be stored in F16 at all) costs only F16 rounding.
        try MLAModelWriter.write(try GGUFEncoder(source: checkpoint, dtype: .f16, provenance: []),
                                 to: try OutputPlan(dir + "/f16.gguf", kind: .file, force: false, inputs: [checkpoint.path]), layers: layers)
        let f16 = try evaluatePerplexity(model: try StreamedModel(try Checkpoint.open(dir + "/f16.gguf")), tokens: ids, window: 256)
        #expect(abs(f16.perplexity / native.perplexity - 1) < 3e-3, "F16 GGUF \(f16.perplexity) vs native \(native.perplexity)")

        // --dtype q8_0: every 2-D tensor whose rows are whole 32-value blocks is Q8_0 (here all: r = 160,
        // d_nope = 64), norms stay F32; each value is within half a Q8_0 step of the F32 file's, the step
        // being its block's amax/127 in float64, plus 127 times the F16 rounding of the step (half an F16
        // ulp: 2^-11 relative, 2^-25 absolute below F16's normal range); the model stays sane.
        try MLAModelWriter.write(try GGUFEncoder(source: checkpoint, dtype: .f32, q8_0: true, provenance: []),
                                 to: try OutputPlan(dir + "/q8.gguf", kind: .file, force: false, inputs: [checkpoint.path]), layers: layers)
        let q8File = try GGUFFile(path: dir + "/q8.gguf")
        #expect(q8File.value("general.file_type") == .uint32(7))
        #expect(q8File.tensors.allSatisfy { $0.type == ($0.ne.count == 1 ? .f32 : .q8_0) }, "\(Set(q8File.tensors.map { "\($0.ne.count)-D \($0.type)" }))")
        let f32Store = try GGUFTensorStore(file: file), q8Store = try GGUFTensorStore(file: q8File)
        for name in ["blk.3.attn_kv_a_mqa.weight", "blk.3.attn_k_b.weight", "blk.3.attn_v_b.weight", "blk.3.attn_q.weight", "token_embd.weight"] {
            let hf = GGUFNames.hfName(name)
            let x = try f32Store.tensor(hf).floats().map(Double.init), y = try q8Store.tensor(hf).floats()
            var worst = 0.0
            for b in 0..<(x.count / 32) {
                let step = x[(b * 32)..<(b * 32 + 32)].map(abs).max()! / 127
                let bound = 0.5 * step + 127 * max(step * 0x1p-11, 0x1p-25)
                for j in (b * 32)..<(b * 32 + 32) where step > 0 { worst = max(worst, abs(Double(y[j]) - x[j]) / bound) }
            }
            #expect(y.count == x.count && worst <= 1, "\(name): an error of \(worst) times the bound")
        }
        let q8 = try evaluatePerplexity(model: try StreamedModel(try Checkpoint.open(dir + "/q8.gguf")), tokens: ids, window: 256)
        #expect(abs(q8.perplexity / native.perplexity - 1) < 0.02, "Q8_0 GGUF \(q8.perplexity) vs native \(native.perplexity)")
    }

    /// A low-rank query (--q-lora-rank) goes to attn_q_a / attn_q_a_norm / attn_q_b with its norm made
    /// linear under the file's single epsilon: the GGUF computes what the native output does (whose query
    /// norm uses the HF constant 1e-6), and the q_a rows sit at normal magnitudes.
    @Test(.needsSampleData) func lowRankQueryGGUFMatchesNative() throws {
        let (_, layers, dir) = try Self.nativeAndGGUF(queryRank: 288)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = try GGUFFile(path: dir + "/model.gguf")
        #expect(file.value("deepseek2.attention.q_lora_rank")?.int == 288 && file.tensorInfo("blk.0.attn_q.weight") == nil)
        #expect(file.tensorInfo("blk.0.attn_q_a.weight")?.ne == [576, 288] && file.tensorInfo("blk.0.attn_q_a_norm.weight")?.ne == [288])
        #expect(file.tensorInfo("blk.0.attn_q_b.weight")?.ne == [288, 9 * layers[0].qHeadWidth])
        let qA = try GGUFTensorStore(file: file).tensor(GGUFNames.hfName("blk.5.attn_q_a.weight")).floats()
        let rms = (qA.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(qA.count)).squareRoot()
        #expect(rms > 1e-3, "the q_a rows' RMS \(rms) would not survive F16 block scales")

        let ids = try Self.hamletIds(256)
        let native = try evaluatePerplexity(model: try StreamedModel(try Checkpoint.open(dir + "/native")), tokens: ids, window: 256)
        let fromGGUF = try evaluatePerplexity(model: try StreamedModel(try Checkpoint.open(dir + "/model.gguf")), tokens: ids, window: 256)
        #expect(abs(fromGGUF.perplexity / native.perplexity - 1) < 1e-4, "GGUF \(fromGGUF.perplexity) vs native \(native.perplexity)")
    }

    /// The sample model converted at 50 % (rope 32 with stride 1 and no fold, plain keys, output-weighted values;
    /// `queryRank`: a low-rank query) and written into a new temporary directory `dir` twice: natively
    /// (`dir/native`) and as an F32 deepseek2 GGUF (`dir/model.gguf`). The caller removes `dir`.
    static func nativeAndGGUF(queryRank: Int? = nil) throws -> (checkpoint: Checkpoint, layers: [MLALayerWeights], dir: String) {
        let (checkpoint, _) = try TestData.sampleModel.get()
        let options = LayerConversionOptions(ropePlan: .shared(dims: 32, stride: 1, fold: 1), weighting: LatentWeighting(keys: .plain, values: .output),
                                             queryRank: queryRank, foldSoftmaxScale: true)
        let layers = try convert(checkpoint.config, checkpoint.store, options, stats: try calibration.get(), budget: .fraction(0.5)).map(\.0)
        let dir = NSTemporaryDirectory() + "mla-gguf-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let writer = CheckpointWriter(format: .hf)
        try MLAModelWriter.write(NativeMLAEncoder(source: checkpoint, provenance: [], writer: writer),
                                 to: try writer.output(dir + "/native", force: false, inputs: [checkpoint.path]), layers: layers)
        try MLAModelWriter.write(try GGUFEncoder(source: checkpoint, dtype: .f32, provenance: [("method", "test")]),
                                 to: try OutputPlan(dir + "/model.gguf", kind: .file, force: false, inputs: [checkpoint.path]), layers: layers)
        return (checkpoint, layers, dir)
    }
}
